#include "src/devices/virtio/block/request.h"

#include "absl/strings/str_format.h"

namespace ember::virtio::block {
Request ParseRequest(const GuestMemory& mem, const DescriptorChain& chain,
                     uint64_t capacity_sectors) {
  Request req;
  const std::vector<Descriptor>& d = chain.descriptors;
  if (!d.empty() && d.back().device_writable && d.back().len >= 1) {
    req.status_addr = d.back().addr;
  }
  if (d.size() < 2) {
    req.error = absl::InvalidArgumentError("request has fewer than 2 descriptors");
    return req;
  }
  if (d.front().device_writable || d.front().len < sizeof(RequestHeader)) {
    req.error = absl::InvalidArgumentError("request header is not a readable 16 bytes");
    return req;
  }
  if (!req.status_addr) {
    req.error = absl::InvalidArgumentError("request has no writable status byte");
    return req;
  }
  absl::StatusOr<RequestHeader> header = mem.ReadObj<RequestHeader>(d.front().addr);
  if (!header.ok()) {
    req.error = header.status();
    return req;
  }
  req.type = header->type;
  req.sector = header->sector;
  req.data.assign(d.begin() + 1, d.end() - 1);
  for (const Descriptor& b : req.data) req.data_len += b.len;

  auto fail = [&req](std::string why) {
    req.error = absl::InvalidArgumentError(std::move(why));
    return req;
  };
  switch (req.type) {
    case kRequestIn:
    case kRequestOut: {
      bool want_writable = req.type == kRequestIn;
      for (const Descriptor& b : req.data) {
        if (b.len == 0) return fail("request has a zero-length data buffer");
        if (b.device_writable != want_writable) {
          return fail(want_writable ? "read request into a read-only buffer"
                                    : "write request from a device-writable buffer");
        }
      }
      if (req.data.empty() || req.data_len % kSectorSize) {
        return fail(absl::StrFormat("data length %d is not a non-zero multiple of 512",
                                    req.data_len));
      }
      uint64_t sectors = req.data_len / kSectorSize;
      if (req.sector > capacity_sectors || sectors > capacity_sectors - req.sector) {
        return fail(absl::StrFormat("sectors [%d, +%d) are beyond the disk's %d", req.sector,
                                    sectors, capacity_sectors));
      }
      return req;
    }
    case kRequestGetId:
      if (req.data.empty() || !req.data.front().device_writable ||
          req.data.front().len < kIdBytes) {
        return fail("get-id request needs a writable buffer of 20 bytes");
      }
      return req;
    default:
      return req;  // flush needs nothing; unknown types are answered UNSUPP
  }
}

}  // namespace ember::virtio::block
