// Hand-made kernel images for tests: a minimal ELF vmlinux (optionally with
// a PVH note) and a minimal bzImage, plus a helper to put bytes in a file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ember::testing {

// One PT_LOAD of `code` at `paddr` (memsz 0x2000) and, with `pvh`, a Xen
// PVH note whose entry is `paddr + pvh_offset`. e_entry is `paddr`.
std::vector<uint8_t> MakeElf(const std::vector<uint8_t>& code, uint64_t paddr, bool pvh,
                             uint64_t pvh_offset = 0);

// Two setup sectors, then `payload` (default: 0x400 NOPs) as the
// protected-mode kernel; init_size 1 MiB at 16 MiB.
std::vector<uint8_t> MakeBzImage(uint16_t version = 0x020f, uint16_t xloadflags = 1,
                                 std::vector<uint8_t> payload = {});

// Writes `bytes` to a new file under /tmp and returns its path.
std::string WriteTempFile(const std::vector<uint8_t>& bytes);

}  // namespace ember::testing
