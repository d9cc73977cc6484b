// libFuzzer target: virtio-balloon behind its transport, with statistics,
// free page reporting and hinting, driven as transport_harness.h drives
// every device, plus what the host does to a balloon while the guest runs
// (a new target, a new statistics interval, the timer firing, hinting runs
// started, stopped and ended by a resume) and its own snapshot bytes:
// garbage given to
// RestoreDeviceState must be refused or taken, never crash, and saved
// state restored saves the same again.
#include <sys/epoll.h>

#include "src/devices/virtio/balloon/balloon_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;
using ember::virtio::balloon::BalloonDevice;

namespace {

struct Harness {
  LogCounter log;
  std::unique_ptr<TransportHarness> h;
  Harness() {
    BalloonConfig config;
    config.deflate_on_oom = true;
    config.stats_polling_interval_s = 1;
    config.free_page_hinting = true;
    config.free_page_reporting = true;
    auto dev = BalloonDevice::Create(config);
    if (!dev.ok()) Fail("cannot make the balloon");
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
  }

  void Extra(FuzzInput& in) {
    virtio::MmioTransport& t = h->transport();
    bool active = t.status() & virtio::kStatusDriverOk;
    switch (in.U8() % 6) {
      case 0:
        t.WithDevice([&](virtio::VirtioDevice& d) {
          static_cast<BalloonDevice&>(d).SetTarget(in.U8() < 200 ? in.U8() : in.U64());
        });
        break;
      case 1:
        t.WithDevice([&](virtio::VirtioDevice& d) {
          (void)static_cast<BalloonDevice&>(d).SetStatsInterval(in.U8() % 4);
        });
        break;
      case 2:  // the statistics timer fired
        t.NotifyBackend(EPOLLIN);
        break;
      case 3: {  // the device's own snapshot bytes, anything at all
        std::span<const uint8_t> bytes = in.Bytes(in.U8() % 32);
        if (!active) break;
        t.WithDevice([&](virtio::VirtioDevice& d) { (void)d.RestoreDeviceState(bytes); });
        break;
      }
      case 4: {  // saved, restored, saved again: the same bytes
        if (!active) break;
        t.WithDevice([&](virtio::VirtioDevice& d) {
          std::vector<uint8_t> saved = d.SaveDeviceState();
          if (!d.RestoreDeviceState(saved).ok() || d.SaveDeviceState() != saved) {
            Fail("the balloon's saved state does not restore to itself");
          }
        });
        break;
      }
      case 5:  // a hinting run: started, stopped, or ended by a resume
        t.WithDevice([&](virtio::VirtioDevice& d) {
          auto& b = static_cast<BalloonDevice&>(d);
          switch (in.U8() % 3) {
            case 0: (void)b.StartHinting(in.U8() & 1); break;
            case 1: (void)b.StopHinting(); break;
            default: b.Resumed();
          }
        });
        break;
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  FuzzInput in(data, size);
  harness->h->Run(in, harness->log);
  return 0;
}
