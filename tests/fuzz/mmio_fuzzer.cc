// libFuzzer target: the virtio-mmio transport fed register-access
// sequences (every offset and width, the init sequence, status writes,
// kicks, interrupt acks, snapshot state) with guest memory and rings the
// input writes, in front of each kind of device: virtio-blk with the Sync
// and the Async (io_uring) engine on a memfd disk, virtio-balloon with
// and without its statistics queue, virtio-pmem on a memfd with and
// without a flush limiter, and virtio-mem on a hotplug region whose
// requested size the input sets (as PATCH /hotplug/memory does). transport_harness.h says what is checked
// beyond ASan and UBSan.
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "src/devices/virtio/balloon/balloon_device.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/mem/mem_device.h"
#include "src/devices/virtio/pmem/pmem_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;

namespace {

std::unique_ptr<virtio::VirtioDevice> Block(IoEngine engine) {
  int disk = memfd_create("ember-fuzz-disk", 0);
  if (disk < 0 || ftruncate(disk, 64 * 1024) != 0) Fail("memfd disk");
  DriveConfig config{"fuzz", "/proc/self/fd/" + std::to_string(disk)};
  config.io_engine = engine;
  auto dev = virtio::block::BlockDevice::Create(config);
  if (!dev.ok()) Fail("cannot make the block device");
  return std::move(*dev);
}

std::unique_ptr<virtio::VirtioDevice> Balloon(uint32_t stats_s) {
  BalloonConfig config;
  config.amount_mib = 0;
  config.deflate_on_oom = true;
  config.stats_polling_interval_s = stats_s;
  auto dev = virtio::balloon::BalloonDevice::Create(config);
  if (!dev.ok()) Fail("cannot make the balloon");
  return std::move(*dev);
}

// A 64 KiB file: the rest of its 2 MiB region is padding.
std::unique_ptr<virtio::VirtioDevice> Pmem(bool limited) {
  int file = memfd_create("ember-fuzz-pmem", 0);
  if (file < 0 || ftruncate(file, 64 * 1024) != 0) Fail("memfd pmem");
  PmemConfig config{"fuzz", "/proc/self/fd/" + std::to_string(file)};
  if (limited) config.rate_limiter = RateLimiterConfig{std::nullopt, TokenBucketConfig{1, 1000, 0}};
  auto backing = virtio::pmem::PmemBacking::Map(config.path_on_host, false);
  if (!backing.ok()) Fail("cannot map the pmem file");
  auto dev = virtio::pmem::PmemDevice::Create(config, std::move(*backing), 4ull << 30);
  if (!dev.ok()) Fail("cannot make the pmem device");
  return std::move(*dev);
}

// 256 MiB in two slots at 4 GiB; a slot the guest plugs is opened to the
// device (mprotect, under the VMM thread's filter), as Ember does beside
// giving KVM the slot.
std::unique_ptr<TransportHarness> Mem() {
  constexpr uint64_t kBase = 4ull << 30;
  auto harness = std::make_shared<TransportHarness*>(nullptr);
  auto dev = virtio::mem::MemDevice::Create({256, 128, 2}, kBase, [harness](size_t i, bool plug) {
    return (*harness)->mem().SetHotplugSlot(i, plug);
  });
  if (!dev.ok()) Fail("cannot make the virtio-mem device");
  virtio::mem::MemDevice* mem = dev->get();
  auto h = std::make_unique<TransportHarness>(std::move(*dev));
  *harness = h.get();
  h->AddHotplugRegion(kBase, 256 << 20, 128 << 20);
  h->set_extra_op([mem, t = &h->transport()](FuzzInput& in) {
    uint64_t mib = in.U8() < 240 ? uint64_t{in.U8()} * 2 : in.U32();
    t->WithDevice([&](virtio::VirtioDevice&) { return mem->SetRequestedSize(mib << 20); })
        .IgnoreError();
  });
  return h;
}

struct Devices {
  LogCounter log;
  std::vector<std::unique_ptr<TransportHarness>> all;
  Devices() {
    all.push_back(std::make_unique<TransportHarness>(Block(IoEngine::kSync)));
    all.push_back(std::make_unique<TransportHarness>(Block(IoEngine::kAsync)));
    all.push_back(std::make_unique<TransportHarness>(Balloon(1)));
    all.push_back(std::make_unique<TransportHarness>(Balloon(0)));
    all.push_back(std::make_unique<TransportHarness>(Pmem(false)));
    all.push_back(std::make_unique<TransportHarness>(Pmem(true)));
    all.push_back(Mem());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Devices* devices = new Devices();
  FuzzInput in(data, size);
  TransportHarness& h = *devices->all[in.U8() % devices->all.size()];
  h.Run(in, devices->log);
  return 0;
}
