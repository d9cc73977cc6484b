// libFuzzer target: virtio-mem behind its transport (transport_harness.h),
// with guest requests that mean something: PLUG, UNPLUG, UNPLUG_ALL, STATE
// and unknown types, on block-aligned ranges of the hotplug region mostly
// and anywhere sometimes, their descriptors well formed mostly, their
// answer buffer in RAM or in hotplug memory itself; and what the host does
// meanwhile: a new requested size (PATCH /hotplug/memory), KVM refusing to
// map or unmap a slot, and the device's saved state, as garbage, mutated
// and round-tripped.
//
// Beyond the harness's checks, what the device promises: plugged_size
// counts the plugged blocks; every plugged block lies in the usable
// region, on a slot open to the VMM; a slot without one is closed unless
// KVM refused to let go of it; the config space says what status() says;
// an ACK changed exactly the blocks asked for (a PLUG only within
// requested_size), any other answer none; a sound UNPLUG and UNPLUG_ALL
// are always ACKed; STATE tells the truth; a new requested size never
// shrinks the usable region; saved state restores to itself, and
// restored garbage that is taken saves back to the same bytes.
#include <cstring>

#include "src/common/byte_codec.h"
#include "src/devices/virtio/mem/mem_device.h"
#include "tests/fuzz/transport_harness.h"

using namespace ember;
using namespace ember::fuzz;
using namespace ember::virtio::mem;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kBase = 4ull << 30;  // past the harness's RAM, on a block
constexpr uint64_t kRegion = 256 * kMiB, kSlot = 128 * kMiB, kBlock = 2 * kMiB;
constexpr uint64_t kBlocks = kRegion / kBlock, kBlocksPerSlot = kSlot / kBlock;
constexpr uint64_t kReq = 0xc0000, kResp = 0xc0100;  // in RAM, away from the rings

// The device as its saved state and status() tell it.
struct View {
  uint64_t usable = 0, requested = 0, plugged_size = 0;
  std::vector<bool> plugged;  // by block
};

uint64_t SlotsFor(uint64_t bytes) { return (bytes + kSlot - 1) / kSlot * kSlot; }

struct Harness {
  LogCounter log;
  std::unique_ptr<TransportHarness> h;
  MemDevice* device = nullptr;
  std::vector<uint8_t> fresh;  // the saved state of a device nothing touched
  int failures = 0;            // slot calls KVM is to refuse next
  bool refused = false;        // KVM refused one in this input
  bool refused_now = false;    // and during the request being judged
  uint64_t last_addr = kBase;  // the last request's range
  uint16_t last_nb = 1;

  Harness() {
    auto dev = MemDevice::Create({256, 128, 2}, kBase,
                                 [this](size_t i, bool plug) { return Slot(i, plug); });
    if (!dev.ok()) Fail("cannot make the virtio-mem device");
    device = dev->get();
    h = std::make_unique<TransportHarness>(std::move(*dev));
    h->AddHotplugRegion(kBase, kRegion, kSlot);
    h->set_extra_op([this](FuzzInput& in) { Extra(in); });
    fresh = device->SaveDeviceState();
  }

  // Ember's hook opens the slot to the VMM and gives it to KVM (or the
  // reverse); a KVM refusal leaves the slot as it was.
  absl::Status Slot(size_t index, bool plug) {
    if (failures > 0) {
      failures--;
      refused = refused_now = true;
      return absl::InternalError("KVM said no");
    }
    return h->mem().SetHotplugSlot(index, plug);
  }

  virtio::MmioTransport& t() { return h->transport(); }
  std::vector<uint8_t> Save() { return h->SaveDeviceState(); }

  View Look() {
    View v;
    std::vector<uint8_t> saved;
    t().WithDevice([&](virtio::VirtioDevice&) {
      saved = device->SaveDeviceState();
      v.plugged_size = device->status().plugged_size;
    });
    ByteReader r(saved);
    uint64_t skip;
    std::vector<uint8_t> bits;
    if (!r.U64(&skip) || !r.U64(&skip) || !r.U64(&skip) || !r.U64(&skip) || !r.U64(&v.usable) ||
        !r.U64(&v.requested) || !r.Bytes(&bits, kBlocks / 8) || bits.size() != kBlocks / 8) {
      Fail("the device's saved state does not read back");
    }
    for (uint64_t b = 0; b < kBlocks; b++) v.plugged.push_back((bits[b / 8] >> (b % 8)) & 1);
    return v;
  }

  // A restore as a snapshot load makes it; KVM does not fail it here (a
  // failed load leaves no VM to check).
  absl::Status Restore(std::span<const uint8_t> bytes) {
    int keep = failures;
    failures = 0;
    absl::Status st = h->RestoreDeviceState(bytes);
    failures = keep;
    return st;
  }

  void Check() {
    View v = Look();
    uint64_t count = 0;
    for (uint64_t b = 0; b < kBlocks; b++) {
      if (!v.plugged[b]) continue;
      count++;
      if ((b + 1) * kBlock > v.usable) Fail("a plugged block past the usable region");
      if (!h->mem().hotplug_slot_plugged(b / kBlocksPerSlot)) {
        Fail("a plugged block's slot is closed");
      }
    }
    if (v.plugged_size != count * kBlock) Fail("plugged_size is not the plugged blocks");
    if (v.usable > kRegion || v.usable % kSlot) Fail("the usable region is not whole slots of it");
    if (v.requested > kRegion || v.requested % kBlock) Fail("requested_size out of range");
    if (v.usable < v.requested) Fail("requested_size past the usable region");
    for (uint64_t s = 0; s < kRegion / kSlot && !refused; s++) {
      bool any = false;
      for (uint64_t b = s * kBlocksPerSlot; b < (s + 1) * kBlocksPerSlot; b++) any |= v.plugged[b];
      if (!any && h->mem().hotplug_slot_plugged(s)) Fail("a slot without plugged blocks is open");
    }
    // What the guest reads: block_size, node_id, addr, region_size,
    // usable_region_size, plugged_size, requested_size.
    uint64_t config[7] = {};
    OnVcpu([&] {
      for (size_t i = 0; i < 14; i++) {
        t().Read(0x100 + 4 * i, std::span(reinterpret_cast<uint8_t*>(config) + 4 * i, 4));
      }
    });
    uint64_t want[7] = {kBlock, 0, kBase, kRegion, v.usable, v.plugged_size, v.requested};
    if (std::memcmp(config, want, sizeof(want)) != 0) {
      Fail("the config space disagrees with the device");
    }
  }

  // The range of a request: often the last one's again (a driver unplugs
  // what it plugged), else mostly on a block, often one of a few, so that
  // requests meet.
  void Range(FuzzInput& in, uint64_t* addr, uint16_t* nb) {
    uint8_t how = in.U8();
    if (how < 80) {
      *addr = last_addr;
      *nb = last_nb;
      return;
    }
    *addr = how < 176   ? kBase + (in.U8() % 17) * 8 * kBlock
            : how < 216 ? kBase + (in.U8() % (kBlocks + 8)) * kBlock  // and a little past
            : how < 232 ? kBase + in.U32() % (kRegion + kSlot)        // off a block
            : how < 244 ? kBase - kBlock * (1 + in.U8() % 4)
                        : in.U64();
    uint8_t many = in.U8();
    *nb = many < 128 ? 1 << in.U8() % 7 : many < 230 ? 1 + in.U8() % 70 : in.U16();
    last_addr = *addr;
    last_nb = *nb;
  }

  // One request in a chain of descriptors (mostly request, then answer),
  // kicked; its answer checked against the device before and after.
  void Request(FuzzInput& in) {
    std::optional<virtio::Queue::State> q = h->QueueState();
    if (!q) return;
    uint8_t kind = in.U8();
    uint16_t type = kind < 248 ? kind % 4 : in.U16();
    uint64_t addr;
    uint16_t nb;
    Range(in, &addr, &nb);
    uint64_t resp = kResp;
    if (in.U8() >= 230) resp = kBase + (in.U8() % kBlocks) * kBlock + in.U8() * 16ull;
    uint8_t req[kRequestBytes] = {};
    std::memcpy(req, &type, 2);
    std::memcpy(req + 8, &addr, 8);
    std::memcpy(req + 16, &nb, 2);
    if (in.U8() >= 240) req[2] = req[18] = 0xff;  // the padding, which means nothing
    (void)h->mem().Write(kReq, req);
    uint8_t junk[kResponseBytes];
    std::memset(junk, 0xee, sizeof(junk));
    bool resp_ok = h->mem().Write(resp, junk).ok();
    // Mostly request then answer; otherwise lengths, directions or count wrong.
    uint8_t shape = in.U8();
    std::vector<virtio::Descriptor> chain = {{kReq, kRequestBytes, false},
                                             {resp, kResponseBytes, true}};
    if (shape >= 200) {
      switch (shape % 5) {
        case 0:
          chain[0].len = in.U8() % kRequestBytes;
          break;
        case 1:
          chain[1].len = in.U8() % kResponseBytes;
          break;
        case 2:
          chain[in.U8() & 1].device_writable ^= true;
          break;
        case 3:
          chain.pop_back();
          break;
        case 4:
          chain.push_back({resp, kResponseBytes, true});
          break;
      }
    }
    View before = Look();
    uint16_t head = in.U16() % q->size;
    PublishChain(h->mem(), *q, head, chain);
    refused_now = false;
    t().Notify(0);
    // The answer is this request's if exactly it was used (by the queue's
    // count: the ring's index is the guest's to scribble on), with an
    // answer, and the rings lie clear of the request.
    std::optional<virtio::Queue::State> now = h->QueueState();
    if (!now || now->used_ring != q->used_ring || now->size != q->size) return;
    uint16_t used_before = q->next_used, used_after = now->next_used;
    uint64_t slot = q->used_ring + 4 + 8ull * (used_before % q->size);
    uint32_t id = h->mem().ReadObj<uint32_t>(slot).value_or(~0u);
    uint32_t len = h->mem().ReadObj<uint32_t>(slot + 4).value_or(0);
    uint8_t answer[kResponseBytes];
    bool clear = Clear(q->desc_table, 16ull * q->size) &&
                 Clear(q->avail_ring, 6 + 2ull * q->size) &&
                 Clear(q->used_ring, 6 + 8ull * q->size);
    if (!clear || used_after != uint16_t(used_before + 1) || id != head) return;
    if (shape >= 200) {  // malformed: no answer, and nothing done
      if (len != 0 || Look().plugged != before.plugged) Fail("a malformed request was served");
    } else if (resp_ok && len == kResponseBytes && h->mem().Read(resp, answer).ok()) {
      uint16_t a, state;
      std::memcpy(&a, answer, 2);
      std::memcpy(&state, answer + 8, 2);
      Judge(type, addr, nb, a, state, before, Look());
    }
  }

  // Whether [at, +len) stays clear of the request and its answer in RAM.
  static bool Clear(uint64_t at, uint64_t len) {
    return at >= kResp + kResponseBytes || at + len <= kReq;
  }

  // An answer against the device before and after the request.
  void Judge(uint16_t type, uint64_t addr, uint16_t nb, uint16_t answer, uint16_t state,
             const View& before, const View& after) {
    if (answer > kResponseError) Fail("an answer virtio-mem does not define");
    if (type != kRequestState && state != 0) Fail("a state in an answer to no STATE request");
    // The range as the spec reads it: whole blocks in the usable region.
    bool sound = nb > 0 && addr >= kBase && (addr - kBase) % kBlock == 0 &&
                 (addr - kBase) / kBlock + nb <= before.usable / kBlock;
    uint64_t first = sound ? (addr - kBase) / kBlock : 0, plugged = 0;
    for (uint64_t b = first; sound && b < first + nb; b++) plugged += before.plugged[b];
    bool changed = after.plugged != before.plugged;
    if (answer != kResponseAck && changed) Fail("a request not ACKed changed the plugged blocks");
    switch (type) {
      case kRequestPlug: {
        bool fits = before.plugged_size + nb * kBlock <= before.requested;
        if (answer == kResponseAck && !(sound && plugged == 0 && fits)) {
          Fail("a bad PLUG was ACKed");
        }
        if (sound && plugged == 0 && fits && answer != kResponseAck &&
            !(answer == kResponseBusy && refused_now)) {
          Fail("a sound PLUG was refused");
        }
        if (answer == kResponseAck) Expect(before, after, first, nb, true);
        break;
      }
      case kRequestUnplug:
        if (answer == kResponseAck && !(sound && plugged == nb)) Fail("a bad UNPLUG was ACKed");
        if (sound && plugged == nb && answer != kResponseAck) Fail("a sound UNPLUG was refused");
        if (answer == kResponseAck) Expect(before, after, first, nb, false);
        break;
      case kRequestUnplugAll:
        if (answer != kResponseAck) Fail("UNPLUG_ALL was refused");
        if (after.plugged_size != 0) Fail("UNPLUG_ALL left blocks plugged");
        if (after.usable != SlotsFor(before.requested)) Fail("UNPLUG_ALL's usable region");
        break;
      case kRequestState: {
        if (sound != (answer == kResponseAck)) Fail("STATE answered a range wrongly");
        uint16_t want = plugged == 0    ? kStateUnplugged
                        : plugged == nb ? kStatePlugged
                                        : kStateMixed;
        if (sound && state != want) Fail("STATE told a wrong state");
        break;
      }
      default:
        if (answer != kResponseError) Fail("an unknown request was not answered ERROR");
    }
  }

  static void Expect(const View& before, const View& after, uint64_t first, uint64_t nb, bool on) {
    std::vector<bool> want = before.plugged;
    for (uint64_t b = first; b < first + nb; b++) want[b] = on;
    if (after.plugged != want) Fail("an ACK changed other blocks than the request's");
  }

  void Extra(FuzzInput& in) {
    uint8_t op = in.U8();
    switch (op < 112 ? 0 : op % 6) {
      case 0:
        Request(in);
        break;
      case 1: {  // PATCH /hotplug/memory
        uint64_t bytes = in.U8() < 230 ? (in.U8() % (kBlocks + 4)) * kBlock : in.U64();
        View before = Look();
        absl::Status st =
            t().WithDevice([&](virtio::VirtioDevice&) { return device->SetRequestedSize(bytes); });
        View after = Look();
        if (st.ok() != (bytes % kBlock == 0 && bytes <= kRegion)) {
          Fail("a requested size judged wrongly");
        }
        uint64_t want = st.ok() ? bytes : before.requested;
        if (after.requested != want) Fail("requested_size is not the last one taken");
        if (after.usable < before.usable) Fail("a new requested size shrank the usable region");
        break;
      }
      case 2:  // KVM refuses the next slot calls
        failures = 1 + in.U8() % 3;
        break;
      case 3: {  // the saved state, garbage or changed here and there
        std::vector<uint8_t> bytes = GarbledState(in, Save(), 79);
        if (!Restore(bytes).ok()) break;
        if (Save() != bytes) Fail("restored garbage does not save back to itself");
        break;
      }
      case 4: {  // saved, restored, saved again: the same bytes
        std::vector<uint8_t> saved = Save();
        if (!Restore(saved).ok()) Fail("the device's saved state does not restore");
        if (Save() != saved) Fail("the device's saved state does not restore to itself");
        break;
      }
      case 5:
        h->LinuxInit(in.U8(), kFeatureUnpluggedInaccessible, /*indirect=*/false);
        break;
    }
    Check();
  }

  void Run(FuzzInput& in) {
    // Each input starts from a device nothing touched, the pages the last
    // one plugged given back, and a requested size from its first byte
    // (the host's first PATCH; 0 for one input in 129).
    for (uint64_t s = 0; s < kRegion / kSlot; s++) {
      if (h->mem().hotplug_slot_plugged(s)) (void)h->mem().Discard(kBase + s * kSlot, kSlot);
    }
    failures = 0;
    if (!Restore(fresh).ok()) Fail("the fresh state does not restore");
    if (!device->SetRequestedSize(in.U8() % (kBlocks + 1) * kBlock).ok()) Fail("a requested size");
    refused = false;
    last_addr = kBase;
    last_nb = 1;
    h->Run(in, log);
    Check();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  FuzzInput in(data, size);
  harness->Run(in);
  return 0;
}
