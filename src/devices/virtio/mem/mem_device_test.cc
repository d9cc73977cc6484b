// virtio-mem through the host-side driver, on real guest memory with a
// hotplug region: requests as Linux's virtio_mem sends them, the slots
// the host opens and closes, what the guest is told, and its mistakes.
#include "src/devices/virtio/mem/mem_device.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::mem {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kBase = 4ull << 30;
constexpr uint64_t kReq = 0x100000, kResp = 0x100100;

class MemDeviceTest : public ::testing::Test {
 protected:
  // Without `init`, no driver has started the device.
  void Start(uint64_t features = ~0ull, bool init = true) {
    mem_ = std::make_unique<GuestMemory>(*GuestMemory::Create({{0, 4 << 20}}));
    ASSERT_TRUE(mem_->AddHotplugRegion(kBase, 256 * kMiB, 128 * kMiB).ok());
    auto hook = [this](size_t index, bool plug) -> absl::Status {
      calls_.emplace_back(index, plug);
      if (fail_hook_) return absl::InternalError("KVM said no");
      return mem_->SetHotplugSlot(index, plug);
    };
    auto dev = MemDevice::Create({256, 128, 2}, kBase, hook);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::MmioDriver>(*transport_, *mem_, 0x10000);
    if (init) status_ = driver_->Init(features, 256);
  }

  // The transport's state restored onto a device of the same configuration
  // in fresh memory; the slot calls it made are in *calls.
  std::unique_ptr<MmioTransport> Restored(GuestMemory* mem,
                                          std::vector<std::pair<size_t, bool>>* calls) {
    EXPECT_TRUE(mem->AddHotplugRegion(kBase, 256 * kMiB, 128 * kMiB).ok());
    auto hook = [mem, calls](size_t index, bool plug) {
      calls->emplace_back(index, plug);
      return mem->SetHotplugSlot(index, plug);
    };
    auto dev = MemDevice::Create({256, 128, 2}, kBase, hook);
    EXPECT_TRUE(dev.ok());
    auto t = std::make_unique<MmioTransport>(std::move(*dev), mem,
                                             UniqueFd(eventfd(0, EFD_NONBLOCK)));
    absl::Status st = t->RestoreState(transport_->SaveState());
    EXPECT_TRUE(st.ok()) << st;
    return t;
  }
  static MemStatus StatusOf(MmioTransport& t) {
    return static_cast<MemDevice&>(t.device()).status();
  }

  uint64_t Config(uint64_t offset) {
    uint8_t b[8];
    transport_->Read(0x100 + offset, std::span<uint8_t>(b, 4));
    transport_->Read(0x100 + offset + 4, std::span<uint8_t>(b + 4, 4));
    uint64_t v;
    std::memcpy(&v, b, 8);
    return v;
  }

  // One request; the answer's type and state, or none if nothing came back.
  std::optional<std::pair<uint16_t, uint16_t>> Send(uint16_t type, uint64_t addr = 0,
                                                    uint16_t nb_blocks = 0) {
    uint8_t req[kRequestBytes] = {};
    std::memcpy(req, &type, 2);
    std::memcpy(req + 8, &addr, 8);
    std::memcpy(req + 16, &nb_blocks, 2);
    EXPECT_TRUE(mem_->Write(kReq, req).ok());
    uint8_t junk[kResponseBytes];
    std::memset(junk, 0xee, sizeof(junk));
    EXPECT_TRUE(mem_->Write(kResp, junk).ok());
    driver_->queue(0).Add({{kReq, kRequestBytes, false}, {kResp, kResponseBytes, true}});
    driver_->Kick(0);
    std::optional<testing::UsedElement> used = driver_->queue(0).PopUsed();
    if (!used || used->len != kResponseBytes) return std::nullopt;
    uint8_t resp[kResponseBytes];
    EXPECT_TRUE(mem_->Read(kResp, resp).ok());
    uint16_t answer, state;
    std::memcpy(&answer, resp, 2);
    std::memcpy(&state, resp + 8, 2);
    return std::make_pair(answer, state);
  }
  uint16_t Answer(uint16_t type, uint64_t addr = 0, uint16_t nb_blocks = 0) {
    auto r = Send(type, addr, nb_blocks);
    return r ? r->first : 0xffff;
  }

  std::unique_ptr<GuestMemory> mem_;
  std::vector<std::pair<size_t, bool>> calls_;
  bool fail_hook_ = false;
  MemDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::MmioDriver> driver_;
  uint32_t status_ = 0;
};

TEST_F(MemDeviceTest, TheGuestIsToldOfAnUnpluggedRegion) {
  Start();
  EXPECT_EQ(driver_->Read(0x08), kDeviceTypeMem);
  EXPECT_TRUE(status_ & kStatusDriverOk);
  EXPECT_EQ(Config(0), 2 * kMiB) << "block_size";
  EXPECT_EQ(Config(16), kBase) << "addr";
  EXPECT_EQ(Config(24), 256 * kMiB) << "region_size";
  EXPECT_EQ(Config(32), 0u) << "usable_region_size";
  EXPECT_EQ(Config(40), 0u) << "plugged_size";
  EXPECT_EQ(Config(48), 0u) << "requested_size";
  EXPECT_FALSE(mem_->Contains(kBase, 4096)) << "unplugged: no device reaches it";
  EXPECT_TRUE(calls_.empty());
}

TEST_F(MemDeviceTest, ADriverThatMayTouchUnpluggedMemoryIsRefused) {
  Start(~kFeatureUnpluggedInaccessible);
  EXPECT_FALSE(status_ & kStatusDriverOk);
}

TEST_F(MemDeviceTest, PlugsWhatTheHostAsksForAndNoMore) {
  Start();
  EXPECT_EQ(Answer(kRequestPlug, kBase, 1), kResponseError) << "outside the usable region";
  ASSERT_TRUE(device_->SetRequestedSize(4 * kMiB).ok());
  EXPECT_TRUE(driver_->TakeInterrupt()) << "a configuration change";
  EXPECT_EQ(Config(48), 4 * kMiB);
  EXPECT_EQ(Config(32), 128 * kMiB) << "the usable region grows in whole slots";
  EXPECT_EQ(Answer(kRequestPlug, kBase, 3), kResponseNack) << "more than requested";
  EXPECT_EQ(Answer(kRequestPlug, kBase, 2), kResponseAck);
  EXPECT_EQ(Config(40), 4 * kMiB);
  EXPECT_EQ(calls_, (std::vector<std::pair<size_t, bool>>{{0, true}}));
  EXPECT_TRUE(mem_->Write(kBase + 4 * kMiB - 1, std::vector<uint8_t>{7}).ok())
      << "the slot is open to devices";
  EXPECT_FALSE(mem_->Contains(kBase + 128 * kMiB, 1)) << "the next slot is not";
  EXPECT_EQ(Answer(kRequestPlug, kBase, 1), kResponseNack) << "all requested is plugged";
  ASSERT_TRUE(device_->SetRequestedSize(6 * kMiB).ok());
  EXPECT_EQ(Answer(kRequestPlug, kBase + 2 * kMiB, 1), kResponseError) << "already plugged";
  EXPECT_EQ(Answer(kRequestPlug, kBase + 1, 1), kResponseError) << "not on a block";
  EXPECT_EQ(Answer(kRequestPlug, kBase + 4 * kMiB, 0), kResponseError) << "no blocks";
  EXPECT_EQ(device_->status().plugged_size, 4 * kMiB);
}

TEST_F(MemDeviceTest, StateSaysPluggedUnpluggedOrMixed) {
  Start();
  ASSERT_TRUE(device_->SetRequestedSize(2 * kMiB).ok());
  ASSERT_EQ(Answer(kRequestPlug, kBase + 2 * kMiB, 1), kResponseAck);
  auto state = [&](uint64_t addr, uint16_t n) { return Send(kRequestState, addr, n)->second; };
  EXPECT_EQ(state(kBase + 2 * kMiB, 1), kStatePlugged);
  EXPECT_EQ(state(kBase, 1), kStateUnplugged);
  EXPECT_EQ(state(kBase, 2), kStateMixed);
  EXPECT_EQ(Answer(kRequestState, kBase + 128 * kMiB, 1), kResponseError)
      << "past the usable region";
}

TEST_F(MemDeviceTest, UnpluggingGivesThePagesBackAndClosesAnEmptySlot) {
  Start();
  ASSERT_TRUE(device_->SetRequestedSize(4 * kMiB).ok());
  ASSERT_EQ(Answer(kRequestPlug, kBase, 2), kResponseAck);
  ASSERT_TRUE(mem_->Write(kBase, std::vector<uint8_t>{0x5a}).ok());
  ASSERT_TRUE(device_->SetRequestedSize(2 * kMiB).ok());
  EXPECT_EQ(Answer(kRequestUnplug, kBase, 2 + 1), kResponseError) << "a block not plugged";
  EXPECT_EQ(Answer(kRequestUnplug, kBase, 1), kResponseAck);
  EXPECT_EQ(device_->status().plugged_size, 2 * kMiB);
  EXPECT_EQ(calls_.size(), 1u) << "the slot still has a plugged block";
  EXPECT_EQ(Answer(kRequestUnplug, kBase + 2 * kMiB, 1), kResponseAck);
  EXPECT_EQ(calls_.back(), std::make_pair(size_t{0}, false));
  EXPECT_FALSE(mem_->Contains(kBase, 1)) << "closed again";
  ASSERT_EQ(Answer(kRequestPlug, kBase, 1), kResponseAck);
  EXPECT_EQ(*mem_->ReadObj<uint8_t>(kBase), 0) << "plugged again, it reads as zero";
}

TEST_F(MemDeviceTest, UnplugAllEmptiesTheRegionAndShrinksTheUsablePart) {
  Start();
  ASSERT_TRUE(device_->SetRequestedSize(256 * kMiB).ok());
  ASSERT_EQ(Answer(kRequestPlug, kBase, 1), kResponseAck);
  ASSERT_EQ(Answer(kRequestPlug, kBase + 200 * kMiB, 2), kResponseAck);
  ASSERT_TRUE(device_->SetRequestedSize(100 * kMiB).ok());
  EXPECT_EQ(Config(32), 256 * kMiB) << "it never shrinks by itself";
  EXPECT_EQ(Answer(kRequestUnplugAll), kResponseAck);
  EXPECT_EQ(Config(40), 0u);
  EXPECT_EQ(Config(32), 128 * kMiB) << "what the host asks for, in slots";
  EXPECT_FALSE(mem_->hotplug_slot_plugged(0));
  EXPECT_FALSE(mem_->hotplug_slot_plugged(1));
}

TEST_F(MemDeviceTest, APlugKvmRefusesIsBusyAndPlugsNothing) {
  Start();
  ASSERT_TRUE(device_->SetRequestedSize(4 * kMiB).ok());
  fail_hook_ = true;
  // ERROR would make Linux's driver give up on the device.
  EXPECT_EQ(Answer(kRequestPlug, kBase, 2), kResponseBusy);
  EXPECT_EQ(device_->status().plugged_size, 0u);
  fail_hook_ = false;
  EXPECT_EQ(Answer(kRequestPlug, kBase, 2), kResponseAck) << "and it can be tried again";
}

TEST_F(MemDeviceTest, MalformedRequestsAreAnsweredWithNothing) {
  Start();
  driver_->queue(0).Add({{kReq, kRequestBytes, false}});  // no room for the answer
  driver_->Kick(0);
  std::optional<testing::UsedElement> used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 0u);
  driver_->queue(0).Add({{kReq, 4, false}, {kResp, kResponseBytes, true}});  // too short
  driver_->Kick(0);
  used = driver_->queue(0).PopUsed();
  ASSERT_TRUE(used);
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(Answer(9), kResponseError) << "an unknown request type";
  EXPECT_EQ(Answer(kRequestPlug, ~0ull - kMiB, 0xffff), kResponseError) << "no overflow";
}

TEST_F(MemDeviceTest, TheRequestedSizeIsCheckedAndTheConfigIsReadOnly) {
  Start();
  EXPECT_FALSE(device_->SetRequestedSize(3 * kMiB).ok()) << "not a block multiple";
  EXPECT_FALSE(device_->SetRequestedSize(258 * kMiB).ok()) << "past the region";
  EXPECT_TRUE(device_->SetRequestedSize(256 * kMiB).ok());
  transport_->Write(0x100 + 48, std::vector<uint8_t>{0, 0, 0, 0});
  EXPECT_EQ(Config(48), 256 * kMiB);
}

TEST_F(MemDeviceTest, ARestoreOpensThePluggedSlotsAgain) {
  Start();
  ASSERT_TRUE(device_->SetRequestedSize(130 * kMiB).ok());
  ASSERT_EQ(Answer(kRequestPlug, kBase + 128 * kMiB, 1), kResponseAck);
  ASSERT_EQ(Answer(kRequestPlug, kBase + 2 * kMiB, 63), kResponseAck);
  std::vector<uint8_t> state = device_->SaveDeviceState();

  GuestMemory mem = *GuestMemory::Create({{0, 4 << 20}});
  ASSERT_TRUE(mem.AddHotplugRegion(kBase, 256 * kMiB, 128 * kMiB).ok());
  std::vector<std::pair<size_t, bool>> calls;
  auto hook = [&](size_t index, bool plug) {
    calls.emplace_back(index, plug);
    return mem.SetHotplugSlot(index, plug);
  };
  auto restored = MemDevice::Create({256, 128, 2}, kBase, hook);
  ASSERT_TRUE(restored.ok());
  ASSERT_TRUE((*restored)->RestoreDeviceState(state).ok());
  EXPECT_EQ(calls, (std::vector<std::pair<size_t, bool>>{{0, true}, {1, true}}));
  EXPECT_TRUE(mem.Contains(kBase + 2 * kMiB, 128 * kMiB));
  MemStatus s = (*restored)->status();
  EXPECT_EQ(s.plugged_size, 128 * kMiB);
  EXPECT_EQ(s.requested_size, 130 * kMiB);

  auto other = MemDevice::Create({384, 128, 2}, kBase, hook);
  absl::Status st = (*other)->RestoreDeviceState(state);
  EXPECT_NE(st.message().find("the snapshot's region is 256 MiB"), std::string::npos) << st;
  state.pop_back();
  EXPECT_FALSE((*restored)->RestoreDeviceState(state).ok()) << "truncated";
  std::vector<uint8_t> past = device_->SaveDeviceState();
  std::fill(past.begin() + 32, past.begin() + 40, 0);  // no usable region, blocks plugged
  EXPECT_FALSE((*restored)->RestoreDeviceState(past).ok());
  // More requested than the usable region holds: a state the device never
  // makes (the driver would be asked to plug where it may not).
  ASSERT_TRUE(device_->SetRequestedSize(0).ok());
  ASSERT_EQ(Answer(kRequestUnplugAll), kResponseAck);  // the usable region is none now
  std::vector<uint8_t> over = device_->SaveDeviceState();
  uint64_t requested = 130 * kMiB;
  std::memcpy(over.data() + 40, &requested, sizeof(requested));
  st = (*restored)->RestoreDeviceState(over);
  EXPECT_NE(st.message().find("sizes out of range"), std::string::npos) << st;
}

TEST_F(MemDeviceTest, ASizeRequestedBeforeTheDriverSurvivesARestore) {
  Start(~0ull, /*init=*/false);
  ASSERT_TRUE(device_->SetRequestedSize(64 * kMiB).ok());
  GuestMemory mem = *GuestMemory::Create({{0, 4 << 20}});
  std::vector<std::pair<size_t, bool>> calls;
  std::unique_ptr<MmioTransport> restored = Restored(&mem, &calls);
  EXPECT_EQ(StatusOf(*restored).requested_size, 64 * kMiB);
  EXPECT_TRUE(calls.empty());
}

TEST_F(MemDeviceTest, BlocksADriverLeftPluggedAtItsResetSurviveARestore) {
  Start();
  ASSERT_TRUE(device_->SetRequestedSize(4 * kMiB).ok());
  ASSERT_EQ(Answer(kRequestPlug, kBase, 2), kResponseAck);
  transport_->Write(0x70, std::vector<uint8_t>{0, 0, 0, 0});  // the driver resets
  GuestMemory mem = *GuestMemory::Create({{0, 4 << 20}});
  std::vector<std::pair<size_t, bool>> calls;
  std::unique_ptr<MmioTransport> restored = Restored(&mem, &calls);
  // The next driver finds them plugged and reachable, and unplugs them.
  EXPECT_EQ(StatusOf(*restored).plugged_size, 4 * kMiB);
  EXPECT_EQ(calls, (std::vector<std::pair<size_t, bool>>{{0, true}}));
  EXPECT_TRUE(mem.Contains(kBase, 4 * kMiB));
}

TEST(MemDeviceStateTest, TheLargestRegionsStateFitsASnapshot) {
  // 4 TiB in 2 MiB blocks: all of KVM's 32764 slots of 128 MiB, nearly.
  auto dev = MemDevice::Create({4 << 20, 128, 2}, kBase,
                               [](size_t, bool) { return absl::OkStatus(); });
  ASSERT_TRUE(dev.ok());
  EXPECT_LE((*dev)->SaveDeviceState().size(), MmioTransport::State::kMaxDeviceState);
}

TEST(MemoryHotplugConfigTest, FirecrackersRules) {
  EXPECT_TRUE(ValidateMemoryHotplug({1024, 128, 2}).ok());
  EXPECT_FALSE(ValidateMemoryHotplug({1024, 128, 1}).ok()) << "block below 2 MiB";
  EXPECT_FALSE(ValidateMemoryHotplug({1024, 128, 6}).ok()) << "block not a power of 2";
  EXPECT_FALSE(ValidateMemoryHotplug({1024, 64, 2}).ok()) << "slot below 128 MiB";
  EXPECT_FALSE(ValidateMemoryHotplug({1024, 130, 4}).ok()) << "slot not a block multiple";
  EXPECT_FALSE(ValidateMemoryHotplug({0, 128, 2}).ok()) << "no slot";
  EXPECT_FALSE(ValidateMemoryHotplug({200, 128, 2}).ok()) << "not a slot multiple";
}

}  // namespace
}  // namespace ember::virtio::mem
