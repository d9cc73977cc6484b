// A whole SnapshotState through EncodeSnapshot and DecodeSnapshot, and the
// refusal of files whose sections are unknown, missing, repeated, of
// another version, cut short or garbled.
#include "src/vmm/snapshot/snapshot.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "src/common/testing/state_testing.h"
#include "src/vmm/snapshot/state_file.h"

namespace ember::snapshot {
namespace {

using ::ember::testing::Fill;
using ::ember::testing::SameBytes;

VcpuState SampleVcpu(uint8_t seed, bool xsave) {
  VcpuState v;
  kvm_cpuid_entry2 leaf = {};
  leaf.function = seed;
  leaf.index = 1;
  leaf.eax = 0xaa00 + seed;
  leaf.edx = 0xdd00 + seed;
  v.cpuid = {leaf};
  kvm_msr_entry msr = {};
  msr.index = 0x10;  // IA32_TSC
  msr.data = 0x123456789ull * seed;
  v.msrs = {msr, msr};
  v.msrs[1].index = 0xc0000100;
  Fill(&v.regs, seed);
  Fill(&v.sregs, seed + 1);
  Fill(&v.fpu, seed + 2);
  v.has_xsave = xsave;
  Fill(&v.xsave, seed + 3);
  v.has_xcrs = true;
  Fill(&v.xcrs, seed + 4);
  Fill(&v.lapic, seed + 5);
  v.mp_state.mp_state = seed + 6u;
  Fill(&v.events, seed + 7);
  return v;
}

SnapshotState Sample() {
  SnapshotState s;
  s.config_json = R"({"machine-config":{"vcpu_count":2,"mem_size_mib":128}})";
  s.memory = {{0, 0xc0000000}, {0x100000000ull, 0x40000000}};
  Fill(&s.machine.vm.pic_master, 40);
  Fill(&s.machine.vm.pic_slave, 41);
  Fill(&s.machine.vm.ioapic, 42);
  Fill(&s.machine.vm.pit, 43);
  Fill(&s.machine.vm.clock, 44);
  s.machine.vcpus = {SampleVcpu(10, true), SampleVcpu(20, false)};
  s.serial = {1, 2, 3, 4, 5, 6, true};
  s.i8042 = {0x47, 0xd4, 0xed, true, 2, {0xfa, 0xaa}, {false, true}};
  virtio::Queue::State q;
  q.size = 128;
  q.desc_table = 0x10000;
  q.avail_ring = 0x11000;
  q.used_ring = 0x12000;
  q.ready = true;
  q.event_idx = true;
  q.next_avail = 9;
  q.next_used = 8;
  q.signalled_used = 7;
  virtio::MmioTransport::State block = {2, {0x0f, 1, 0, 0, 0x100000044ull, 1, 3, true}, {q}, {}};
  virtio::MmioTransport::State balloon = {5, {0x0f, 0, 1, 2, 0x100000006ull, 0, 0, true},
                                          {q, q, q}, {1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}};
  balloon.queues[2].next_avail = 77;
  s.virtio = {block, balloon};
  return s;
}

// VcpuState's fields are compared one by one in cpu_state_test.cc; here
// its encoding stands for them.
std::vector<uint8_t> Encoded(const VcpuState& v) {
  ByteWriter w;
  v.Encode(w);
  return w.Take();
}

TEST(Snapshot, RoundTrips) {
  SnapshotState in = Sample();
  absl::StatusOr<SnapshotState> out = DecodeSnapshot(EncodeSnapshot(in));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->config_json, in.config_json);
  ASSERT_EQ(out->memory.size(), 2u);
  for (size_t i = 0; i < 2; i++) {
    EXPECT_EQ(out->memory[i].guest_addr, in.memory[i].guest_addr);
    EXPECT_EQ(out->memory[i].size, in.memory[i].size);
  }
  const VmState& vm = out->machine.vm;
  EXPECT_TRUE(SameBytes(vm.pic_master, in.machine.vm.pic_master));
  EXPECT_TRUE(SameBytes(vm.pic_slave, in.machine.vm.pic_slave));
  EXPECT_TRUE(SameBytes(vm.ioapic, in.machine.vm.ioapic));
  EXPECT_TRUE(SameBytes(vm.pit, in.machine.vm.pit));
  EXPECT_TRUE(SameBytes(vm.clock, in.machine.vm.clock));
  ASSERT_EQ(out->machine.vcpus.size(), 2u);
  for (size_t i = 0; i < 2; i++) {
    EXPECT_EQ(Encoded(out->machine.vcpus[i]), Encoded(in.machine.vcpus[i])) << "vCPU " << i;
  }
  EXPECT_FALSE(out->machine.vcpus[1].has_xsave);
  EXPECT_EQ(out->serial, in.serial);
  EXPECT_EQ(out->i8042, in.i8042);
  EXPECT_EQ(out->virtio, in.virtio) << "in attach order, queues and device bytes included";
}

// Rewrites `file`'s sections through `edit` (which may change or drop
// one: returns false to drop) into a new, correctly checksummed file.
using SectionEdit = std::function<bool(size_t, Section&, std::vector<uint8_t>&)>;
std::vector<uint8_t> Reframe(const std::vector<uint8_t>& file, const SectionEdit& edit) {
  absl::StatusOr<StateReader> r = StateReader::Open(file);
  EXPECT_TRUE(r.ok()) << r.status();
  StateWriter w;
  for (size_t i = 0; i < r->sections().size(); i++) {
    Section s = r->sections()[i];
    std::vector<uint8_t> body(s.body.begin(), s.body.end());
    if (edit(i, s, body)) w.AddSection(s.id, s.version, body);
  }
  return w.Finish();
}

std::string DecodeError(const std::vector<uint8_t>& file) {
  absl::StatusOr<SnapshotState> s = DecodeSnapshot(file);
  return s.ok() ? "decoded" : std::string(s.status().message());
}

TEST(Snapshot, AVersion1FileIsRefusedNamingVersion1) {
  std::vector<uint8_t> file = EncodeSnapshot(Sample());
  file[8] = 1;  // the header's u32 file version, as version 1 wrote it
  EXPECT_EQ(DecodeError(file), "snapshot state file: version 1; this Ember reads version 2");
}

TEST(Snapshot, ASectionOfAnotherVersionIsRefusedNamingIt) {
  std::vector<uint8_t> file = Reframe(EncodeSnapshot(Sample()), [](size_t, Section& s, auto&) {
    if (s.id == 5) s.version = 3;  // serial
    return true;
  });
  EXPECT_EQ(DecodeError(file),
            "snapshot state file: section 'serial' version 3; this Ember reads version 1");
}

TEST(Snapshot, UnknownMissingAndRepeatedSectionsAreRefused) {
  std::vector<uint8_t> sample = EncodeSnapshot(Sample());
  std::vector<uint8_t> unknown = Reframe(sample, [](size_t, Section& s, auto&) {
    if (s.id == 6) s.id = 99;
    return true;
  });
  EXPECT_EQ(DecodeError(unknown), "snapshot state file: unknown section id 99");

  std::vector<uint8_t> missing =
      Reframe(sample, [](size_t, Section& s, auto&) { return s.id != 6; });
  EXPECT_EQ(DecodeError(missing), "snapshot state file: no 'i8042' section");

  StateWriter twice;
  absl::StatusOr<StateReader> r = StateReader::Open(sample);
  for (const Section& s : r->sections()) {
    twice.AddSection(s.id, s.version, s.body);
    if (s.id == 3) twice.AddSection(s.id, s.version, s.body);
  }
  EXPECT_EQ(DecodeError(twice.Finish()), "snapshot state file: section 'vm' appears twice");

  std::vector<uint8_t> no_vcpus =
      Reframe(sample, [](size_t, Section& s, auto&) { return s.id != 4; });
  EXPECT_EQ(DecodeError(no_vcpus), "snapshot state file: no vCPUs or no memory");
}

TEST(Snapshot, EveryTruncatedSectionIsRefusedNamingIt) {
  std::vector<uint8_t> sample = EncodeSnapshot(Sample());
  absl::StatusOr<StateReader> r = StateReader::Open(sample);
  const char* names[] = {"", "config", "memory", "vm", "vcpu", "serial", "i8042", "virtio"};
  for (size_t target = 0; target < r->sections().size(); target++) {
    const Section& section = r->sections()[target];
    for (size_t n = 0; n < section.body.size(); n++) {
      std::vector<uint8_t> file = Reframe(sample, [&](size_t i, Section&, auto& body) {
        if (i == target) body.resize(n);
        return true;
      });
      std::string error = DecodeError(file);
      EXPECT_NE(error.find(absl::StrCat("section '", names[section.id], "': truncated")),
                std::string::npos)
          << "section " << target << " cut to " << n << ": " << error;
    }
    std::vector<uint8_t> longer = Reframe(sample, [&](size_t i, Section&, auto& body) {
      if (i == target) body.push_back(0);
      return true;
    });
    EXPECT_NE(DecodeError(longer).find("left over"), std::string::npos) << target;
  }
}

TEST(Snapshot, GarbledSectionsNeverCrash) {
  std::vector<uint8_t> sample = EncodeSnapshot(Sample());
  absl::StatusOr<StateReader> r = StateReader::Open(sample);
  uint32_t seed = 1;
  auto next = [&seed] { return (seed = seed * 1103515245 + 12345) >> 16; };
  for (size_t target = 0; target < r->sections().size(); target++) {
    size_t size = r->sections()[target].body.size();
    // Every byte of the small sections set to a few telling values; a
    // sample of the bytes of the large ones.
    for (size_t at = 0; at < size; at += size > 512 ? 1 + next() % 97 : 1) {
      for (uint8_t v : {0x00, 0x02, 0x80, 0xff}) {
        (void)DecodeError(Reframe(sample, [&](size_t i, Section&, auto& body) {
          if (i == target) body[at] = v;
          return true;
        }));
      }
    }
    for (int round = 0; round < 50; round++) {
      (void)DecodeError(Reframe(sample, [&](size_t i, Section&, auto& body) {
        if (i == target) {
          body.resize(next() % (size + 8));
          for (uint8_t& b : body) b = static_cast<uint8_t>(next());
        }
        return true;
      }));
    }
  }
}

}  // namespace
}  // namespace ember::snapshot
