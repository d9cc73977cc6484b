// libFuzzer target: the snapshot state file as PUT /snapshot/load reads it:
// DecodeSnapshot, then the configuration JSON it carries through the
// config parser. The first byte picks how the rest becomes a file (of
// eight values):
//   0-1  the file itself;
//   2-4  the payload, under a header with the right length and CRC-32 (so
//        the section framing and every section decoder are reached);
//   5-6  a valid snapshot (built here) with the rest as byte edits to its
//        payload (offset, xor) and a cut, the CRC fixed;
//   7    a valid snapshot whose configuration is one byte of the rest
//        repeated up to 255 KiB, then the rest: deep nesting (a recursive
//        parser overflows its stack long before), long strings.
// Checked beyond ASan and UBSan: a file that decodes re-encodes to a file
// that decodes to the same bytes again.
#include <cstring>

#include "api/vm_config_json.h"
#include "src/vmm/snapshot/snapshot.h"
#include "src/vmm/snapshot/state_file.h"
#include "tests/fuzz/fuzz_input.h"

using namespace ember;
using namespace ember::fuzz;
using ember::snapshot::SnapshotState;

namespace {

constexpr size_t kHeaderSize = 8 + 4 + 8 + 4;

SnapshotState Sample() {
  VmConfig config;
  config.boot_source = BootSourceConfig{"/vmlinux", "", "console=ttyS0"};
  config.machine.vcpu_count = 1;
  config.machine.mem_size_mib = 128;
  config.drives.push_back({"rootfs", "/rootfs.ext4", true});
  config.balloon = BalloonConfig{16, true, 1};
  SnapshotState s;
  s.config_json = api::VmConfigToJson(config);
  s.memory = {{0, 128 << 20}};
  VcpuState v{};
  v.cpuid.resize(2);
  v.cpuid[0].function = 0x40000000;
  v.msrs.resize(2);
  v.msrs[1].index = 0x10;
  v.has_xcrs = true;
  s.machine.vcpus.push_back(v);
  s.machine.vm = VmState{};
  s.serial = {0x01, 0x03, 0x0b, 0, 0x0c, 0, true};
  s.i8042 = {0x47, 0, 0xed, false, 2, {0xfa, 0xaa}, {false, true}};
  virtio::MmioTransport::State t;
  t.device_type = 2;
  t.registers = {15, 1, 1, 0, 1ull << 32, 1, 0, true};
  virtio::Queue::State q;
  q.size = 256;
  q.desc_table = 0x10000;
  q.avail_ring = 0x11000;
  q.used_ring = 0x12000;
  q.ready = true;
  t.queues.push_back(q);
  s.virtio.push_back(t);
  t.device_type = 5;
  t.queues.assign(3, q);
  t.device = {1, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  s.virtio.push_back(t);
  return s;
}

// A header with the right length and CRC in front of `payload`.
std::vector<uint8_t> Frame(const std::vector<uint8_t>& payload) {
  ByteWriter w;
  w.Raw({reinterpret_cast<const uint8_t*>("EMBERSNP"), 8});
  w.U32(snapshot::kStateVersion);
  w.U64(payload.size());
  w.U32(snapshot::Crc32(payload));
  w.Raw(payload);
  return w.Take();
}

void Load(std::span<const uint8_t> file) {
  absl::StatusOr<SnapshotState> state = snapshot::DecodeSnapshot(file);
  if (!state.ok()) return;
  std::vector<uint8_t> again = snapshot::EncodeSnapshot(*state);
  absl::StatusOr<SnapshotState> back = snapshot::DecodeSnapshot(again);
  if (!back.ok()) Fail("a decoded snapshot re-encodes to a file that does not decode");
  if (snapshot::EncodeSnapshot(*back) != again) Fail("a snapshot does not round-trip");
  (void)api::ParseVmConfig(state->config_json);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<uint8_t>* sample =
      new std::vector<uint8_t>(snapshot::EncodeSnapshot(Sample()));
  FuzzInput in(data, size);
  switch (in.U8() % 8) {
    case 0: case 1:
      Load(in.Rest());
      break;
    case 2: case 3: case 4: {
      std::span<const uint8_t> rest = in.Rest();
      Load(Frame({rest.begin(), rest.end()}));
      break;
    }
    case 5: case 6: {
      std::vector<uint8_t> payload(sample->begin() + kHeaderSize, sample->end());
      size_t cut = in.U16();
      if (cut < payload.size()) payload.resize(payload.size() - cut % 64);
      while (in.remaining() >= 3 && !payload.empty()) {
        size_t at = in.U16() % payload.size();
        payload[at] ^= in.U8();
      }
      Load(Frame(payload));
      break;
    }
    case 7: {
      SnapshotState s = Sample();
      uint8_t fill = in.U8();
      size_t count = size_t{in.U8()} * 1024;
      std::span<const uint8_t> rest = in.Rest();
      s.config_json.assign(count, static_cast<char>(fill));
      s.config_json.append(rest.begin(), rest.end());
      Load(snapshot::EncodeSnapshot(s));
      break;
    }
  }
  return 0;
}
