// The snapshot encodings of VcpuState and VmState, without KVM: the KVM
// structs are filled with patterns, encoded, decoded and compared. And,
// where /dev/kvm exists, clock_realtime on a real VM's kvmclock.
#include "src/vmm/arch/x86_64/cpu_state.h"

#include <gtest/gtest.h>
#include <sys/ioctl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "src/vmm/kvm.h"

#include "src/common/testing/state_testing.h"

namespace ember {
namespace {

using ::ember::testing::Fill;
using ::ember::testing::SameBytes;

VcpuState SampleVcpu(bool extended) {
  VcpuState s;
  for (uint32_t i = 0; i < 3; i++) {
    kvm_cpuid_entry2 e = {};
    e.function = 0x40000000 + i;
    e.index = i + 1;
    e.flags = i + 2;
    e.eax = 0x10 + i;
    e.ebx = 0x20 + i;
    e.ecx = 0x30 + i;
    e.edx = 0x40 + i;
    s.cpuid.push_back(e);
  }
  for (uint32_t i = 0; i < 4; i++) {
    kvm_msr_entry e = {};
    e.index = 0xc0000080 + i;
    e.data = 0x1122334455667700ull + i;
    s.msrs.push_back(e);
  }
  Fill(&s.regs, 1);
  Fill(&s.sregs, 2);
  Fill(&s.fpu, 3);
  s.has_xsave = extended;
  Fill(&s.xsave, 4);
  s.has_xcrs = extended;
  Fill(&s.xcrs, 5);
  Fill(&s.lapic, 6);
  s.mp_state.mp_state = 0x0a0b0c0d;
  Fill(&s.events, 7);
  return s;
}

std::vector<uint8_t> Encode(const VcpuState& s) {
  ByteWriter w;
  s.Encode(w);
  return w.Take();
}

void ExpectSame(const VcpuState& a, const VcpuState& b) {
  ASSERT_EQ(a.cpuid.size(), b.cpuid.size());
  for (size_t i = 0; i < a.cpuid.size(); i++) {
    EXPECT_EQ(a.cpuid[i].function, b.cpuid[i].function) << i;
    EXPECT_EQ(a.cpuid[i].index, b.cpuid[i].index) << i;
    EXPECT_EQ(a.cpuid[i].flags, b.cpuid[i].flags) << i;
    EXPECT_EQ(a.cpuid[i].eax, b.cpuid[i].eax) << i;
    EXPECT_EQ(a.cpuid[i].ebx, b.cpuid[i].ebx) << i;
    EXPECT_EQ(a.cpuid[i].ecx, b.cpuid[i].ecx) << i;
    EXPECT_EQ(a.cpuid[i].edx, b.cpuid[i].edx) << i;
  }
  ASSERT_EQ(a.msrs.size(), b.msrs.size());
  for (size_t i = 0; i < a.msrs.size(); i++) {
    EXPECT_EQ(a.msrs[i].index, b.msrs[i].index) << i;
    EXPECT_EQ(a.msrs[i].data, b.msrs[i].data) << i;
  }
  EXPECT_TRUE(SameBytes(a.regs, b.regs));
  EXPECT_TRUE(SameBytes(a.sregs, b.sregs));
  EXPECT_TRUE(SameBytes(a.fpu, b.fpu));
  EXPECT_EQ(a.has_xsave, b.has_xsave);
  if (a.has_xsave) {
    EXPECT_TRUE(SameBytes(a.xsave, b.xsave));
  }
  EXPECT_EQ(a.has_xcrs, b.has_xcrs);
  if (a.has_xcrs) {
    EXPECT_TRUE(SameBytes(a.xcrs, b.xcrs));
  }
  EXPECT_TRUE(SameBytes(a.lapic, b.lapic));
  EXPECT_EQ(a.mp_state.mp_state, b.mp_state.mp_state);
  EXPECT_TRUE(SameBytes(a.events, b.events));
}

absl::Status Decode(std::span<const uint8_t> bytes, VcpuState* out) {
  ByteReader r(bytes);
  out->Decode(r);
  return r.Finish("vcpu");
}

TEST(VcpuStateEncoding, RoundTrips) {
  VcpuState in = SampleVcpu(true), out;
  ASSERT_TRUE(Decode(Encode(in), &out).ok());
  ExpectSame(in, out);
}

TEST(VcpuStateEncoding, WithoutXsaveOrXcrsTheirBytesAreLeftOut) {
  VcpuState in = SampleVcpu(false), out;
  Fill(&out.xsave, 9);
  Fill(&out.xcrs, 9);
  std::vector<uint8_t> bytes = Encode(in);
  EXPECT_LT(bytes.size(), Encode(SampleVcpu(true)).size() - sizeof(Xsave));
  ASSERT_TRUE(Decode(bytes, &out).ok());
  ExpectSame(in, out);
  EXPECT_TRUE(SameBytes(out.xsave, Xsave{})) << "absent state comes back zero";
  EXPECT_TRUE(SameBytes(out.xcrs, kvm_xcrs{}));
}

TEST(VcpuStateEncoding, EveryTruncationIsRefused) {
  std::vector<uint8_t> bytes = Encode(SampleVcpu(true));
  for (size_t n = 0; n < bytes.size(); n++) {
    VcpuState out;
    ByteReader r(std::span(bytes.data(), n));
    EXPECT_FALSE(out.Decode(r)) << n;
    EXPECT_FALSE(r.Finish("vcpu").ok()) << n;
  }
}

TEST(VcpuStateEncoding, BadCountsFlagsAndSizesAreRefused) {
  VcpuState out;
  ByteWriter many;
  many.U32(VcpuState::kMaxEntries + 1);
  EXPECT_NE(Decode(many.bytes(), &out).message().find("count 1025"), std::string::npos);

  ByteWriter beyond;  // a count the bytes that follow cannot hold
  beyond.U32(1000);
  beyond.U32(0);
  EXPECT_NE(Decode(beyond.bytes(), &out).message().find("truncated: count 1000"),
            std::string::npos);

  std::vector<uint8_t> bytes = Encode(SampleVcpu(false));
  // The has_xsave flag follows cpuid, msrs and three blobs.
  size_t flag = 4 + 3 * 28 + 4 + 4 * 12 + 3 * 4 + sizeof(kvm_regs) + sizeof(kvm_sregs) +
                sizeof(kvm_fpu);
  ASSERT_EQ(bytes[flag], 0);
  bytes[flag] = 2;
  EXPECT_NE(Decode(bytes, &out).message().find("not a bool"), std::string::npos);

  bytes = Encode(SampleVcpu(false));
  size_t regs_size = 4 + 3 * 28 + 4 + 4 * 12;  // where kvm_regs' size is
  bytes[regs_size] ^= 8;
  EXPECT_NE(Decode(bytes, &out).message().find("where this build's is"), std::string::npos);
}

TEST(VmStateEncoding, RoundTripsAndRefusesTruncation) {
  VmState in;
  Fill(&in.pic_master, 11);
  Fill(&in.pic_slave, 12);
  Fill(&in.ioapic, 13);
  Fill(&in.pit, 14);
  Fill(&in.clock, 15);
  ByteWriter w;
  in.Encode(w);
  VmState out;
  ByteReader r(w.bytes());
  ASSERT_TRUE(out.Decode(r));
  ASSERT_TRUE(r.Finish("vm").ok());
  EXPECT_TRUE(SameBytes(in.pic_master, out.pic_master));
  EXPECT_TRUE(SameBytes(in.pic_slave, out.pic_slave));
  EXPECT_TRUE(SameBytes(in.ioapic, out.ioapic));
  EXPECT_TRUE(SameBytes(in.pit, out.pit));
  EXPECT_TRUE(SameBytes(in.clock, out.clock));
  for (size_t n = 0; n < w.size(); n += 7) {
    ByteReader short_r(std::span(w.bytes().data(), n));
    EXPECT_FALSE(out.Decode(short_r)) << n;
  }
}

// snapshot/load.clock_realtime: the saved real time stays an input only
// when asked, and asking is refused for a clock saved without one.
TEST(ClockRealtime, KeptOnlyWhenAskedAndRecorded) {
  VmState s = {};
  s.clock.flags = KVM_CLOCK_REALTIME | KVM_CLOCK_TSC_STABLE;
  s.clock.realtime = 1234;
  ASSERT_TRUE(UseClockRealtime(&s, true).ok());
  EXPECT_TRUE(s.clock.flags & KVM_CLOCK_REALTIME);
  ASSERT_TRUE(UseClockRealtime(&s, false).ok());
  EXPECT_FALSE(s.clock.flags & KVM_CLOCK_REALTIME);
  EXPECT_TRUE(s.clock.flags & KVM_CLOCK_TSC_STABLE);
  absl::Status st = UseClockRealtime(&s, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("has no real time"), std::string::npos) << st;
}

// Restored with clock_realtime, kvmclock moves on by the time since the
// save; without it, it goes on from the saved value.
TEST(ClockRealtime, AdvancesARestoredClockByTheTimeSinceTheSave) {
  absl::StatusOr<Kvm> kvm = Kvm::Open();
  if (!kvm.ok()) GTEST_SKIP() << kvm.status();
  absl::StatusOr<VmFd> vm = kvm->CreateVm();
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->CreateIrqchip().ok());
  ASSERT_TRUE(vm->CreatePit2().ok());
  absl::StatusOr<VmState> saved = SaveVmState(vm->fd());
  ASSERT_TRUE(saved.ok()) << saved.status();
  if (!(saved->clock.flags & KVM_CLOCK_REALTIME)) GTEST_SKIP() << "KVM records no real time";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto restored_clock = [&](bool realtime) -> uint64_t {
    VmState s = *saved;
    EXPECT_TRUE(UseClockRealtime(&s, realtime).ok());
    EXPECT_TRUE(RestoreVmState(vm->fd(), s).ok());
    kvm_clock_data now = {};
    EXPECT_EQ(ioctl(vm->fd(), KVM_GET_CLOCK, &now), 0);
    return now.clock;
  };
  EXPECT_GE(restored_clock(true), saved->clock.clock + 300'000'000);
  EXPECT_LT(restored_clock(false), saved->clock.clock + 200'000'000);
}

}  // namespace
}  // namespace ember
