// The Uffd memory backend of snapshot load (Firecracker's protocol): Ember
// registers its guest memory with a new userfaultfd and sends it, with a
// JSON list of the regions, to a page-fault handler listening on a Unix
// socket. The handler fills each page on first touch (UFFDIO_COPY), from
// wherever it keeps the snapshot's memory; ember-uffd-handler is the
// example, reading the memory file.
//   [{"base_host_virt_addr": A, "size": S, "offset": O, "page_size": P,
//     "page_size_kib": P}]
// `offset` is where the region starts in the snapshot's memory file; P is
// the host page size in bytes (2 MiB with huge_pages "2M": each copy then
// fills a whole, aligned huge page).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"
#include "src/vstate/guest_memory.h"

namespace ember::snapshot {

// Ember keeps both open while the VM lives: the registration ends with the
// last reference to the userfaultfd, and the handler takes a closed
// connection to mean that Ember has exited.
struct UffdHandover {
  UniqueFd uffd;
  UniqueFd connection;
};
absl::StatusOr<UffdHandover> HandOverToUffdHandler(const GuestMemory& mem,
                                                   const std::string& socket_path);

}  // namespace ember::snapshot
