// Whole VMs on real KVM with hand-assembled guests: no Linux, so they run
// in milliseconds and every run of the unit tests covers KVM_RUN, the port
// bus, the console and the reset path.
#include "src/vmm/builder.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "src/vmm/arch/x86_64/layout.h"
#include "src/common/exit_code.h"
#include "src/common/file_lease.h"
#include "src/common/testing/smaps.h"
#include "src/common/testing/test_images.h"

namespace ember {
namespace {

// Valid in 32-bit protected mode and in long mode alike:
//   mov dx, 0x3f8; mov al, 'h'; out dx, al; mov al, 'i'; out dx, al;
//   mov al, '\n'; out dx, al; mov al, 0xfe; out 0x64, al; 1: hlt; jmp 1b
const std::vector<uint8_t> kHelloAndReset = {0x66, 0xba, 0xf8, 0x03, 0xb0, 0x68, 0xee, 0xb0,
                                             0x69, 0xee, 0xb0, 0x0a, 0xee, 0xb0, 0xfe, 0xe6,
                                             0x64, 0xf4, 0xeb, 0xfd};
// Echoes COM1 input to COM1 output until it reads 'q', then resets:
//   0: mov dx, 0x3fd; 4: in al, dx; test al, 1; jz 4; mov dx, 0x3f8;
//   in al, dx; out dx, al; cmp al, 'q'; jne 0; mov al, 0xfe; out 0x64, al; hlt
const std::vector<uint8_t> kEchoUntilQ = {0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xfb,
                                          0x66, 0xba, 0xf8, 0x03, 0xec, 0xee, 0x3c, 0x71, 0x75,
                                          0xed, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd};
// 32-bit (PVH) only: counts at 0x3000 until 0x3004 is non-zero, then resets.
//   0: inc dword [0x3000]; cmp dword [0x3004], 0; je 0
//      mov al, 0xfe; out 0x64, al; hlt; jmp $-1
const std::vector<uint8_t> kCountUntilTold = {0xff, 0x05, 0x00, 0x30, 0x00, 0x00, 0x83, 0x3d,
                                              0x04, 0x30, 0x00, 0x00, 0x00, 0x74, 0xf1, 0xb0,
                                              0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd};
constexpr uint64_t kKernelAddr = 0x1000000;

// Threads of this process named vcpu*. (Counting all threads would also
// count KVM's own per-VM worker, which recent kernels show as a task.)
int VcpuThreads() {
  int n = 0;
  DIR* d = opendir("/proc/self/task");
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char comm[32] = {};
    std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) continue;
    (void)!read(fd, comm, sizeof(comm) - 1);
    close(fd);
    n += std::string(comm).rfind("vcpu", 0) == 0;
  }
  closedir(d);
  return n;
}

// Whether VcpuThreads() reaches `n` within a second (a new thread names
// itself first thing, but not at once).
bool VcpuThreadsReach(int n) {
  for (int i = 0; i < 1000; i++) {
    if (VcpuThreads() == n) return true;
    usleep(1000);
  }
  return false;
}

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/kvm";
    ASSERT_EQ(pipe2(out_, O_NONBLOCK | O_CLOEXEC), 0);
  }
  void TearDown() override {
    for (const std::string& f : files_) unlink(f.c_str());
    close(out_[0]);
    close(out_[1]);
  }
  VmConfig Config(const std::vector<uint8_t>& kernel, uint32_t vcpus = 1) {
    files_.push_back(testing::WriteTempFile(kernel));
    VmConfig config;
    config.boot_source = BootSourceConfig{files_.back(), "", "console=ttyS0"};
    config.machine.vcpu_count = vcpus;
    config.machine.mem_size_mib = 32;
    return config;
  }
  std::string Console() {
    char buf[256];
    ssize_t n = read(out_[0], buf, sizeof(buf));
    return n > 0 ? std::string(buf, n) : "";
  }
  ConsoleIo Io() { return ConsoleIo{-1, out_[1]}; }

  int out_[2];
  std::vector<std::string> files_;
};

TEST_F(VmTest, PvhGuestWritesConsoleAndResets) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0)), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(Console(), "hi\n");
  EXPECT_EQ(VcpuThreads(), 0) << "every vCPU thread joined";
}

TEST_F(VmTest, MetricsCountTheGuestsExitsAndDevices) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0)), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  Metrics m;
  (*vm)->CollectMetrics(&m);
  auto value = [&](const char* group, const char* name) -> uint64_t {
    for (const auto& [n, v] : m.Group(group).counts) {
      if (n == name) return v;
    }
    return ~0ull;
  };
  EXPECT_EQ(value("vcpu", "exit_io_out"), 4u) << "three bytes to COM1, the reset";
  EXPECT_EQ(value("vcpu", "exit_io_in"), 0u);
  EXPECT_EQ(value("vcpu", "failures"), 0u);
  EXPECT_NE(value("vcpu", "exit_io_out_agg.sum_us"), ~0ull);
  EXPECT_EQ(value("uart", "write_count"), 3u);
  EXPECT_EQ(value("i8042", "reset_count"), 1u);
  // This guest needs nothing from the VMM loop, and may reset before the
  // loop first waits: ConsoleInputReachesTheGuest counts its events.
  EXPECT_NE(value("vmm", "device_events"), ~0ull);
}

TEST_F(VmTest, ConsoleInputReachesTheGuest) {
  int in[2];
  ASSERT_EQ(pipe2(in, O_CLOEXEC), 0);
  ASSERT_EQ(write(in[1], "abq", 3), 3);
  auto vm = BuildForBoot(Config(testing::MakeElf(kEchoUntilQ, kKernelAddr, true, 0)),
                       ConsoleIo{in[0], out_[1]});
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  Metrics m;
  (*vm)->CollectMetrics(&m);
  uint64_t events = 0;
  for (const auto& [name, v] : m.Group("vmm").counts) {
    if (name == "device_events") events = v;
  }
  EXPECT_GT(events, 0u) << "the console input came through the VMM loop";
  vm->reset();
  close(in[0]);
  close(in[1]);
  EXPECT_EQ(Console(), "abq") << "echoed by the guest; the partial line is flushed on exit";
}

TEST_F(VmTest, BootTimerTakesOnlyTheMagicByte) {
  // mov byte [0xd0000000], 7; mov word [0xd0000000], 123; (ignored)
  // mov byte [0xd0000000], 123; then reset
  const std::vector<uint8_t> code = {0xc6, 0x05, 0x00, 0x00, 0x00, 0xd0, 0x07,
                                     0x66, 0xc7, 0x05, 0x00, 0x00, 0x00, 0xd0, 0x7b, 0x00,
                                     0xc6, 0x05, 0x00, 0x00, 0x00, 0xd0, 0x7b,
                                     0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd};
  VmConfig config = Config(testing::MakeElf(code, kKernelAddr, true, 0));
  auto plain = BuildForBoot(config, Io());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)->devices().boot_timer(), nullptr) << "only with --boot-timer";
  EXPECT_EQ((*plain)->Run(), kExitOk) << "writes to nowhere are dropped";
  config.boot_timer = true;
  auto vm = BuildForBoot(config, Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_NE((*vm)->devices().boot_timer(), nullptr);
  EXPECT_LT((*vm)->devices().boot_timer()->boot_ms(), 0);
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_GE((*vm)->devices().boot_timer()->boot_ms(), 0);
}

TEST_F(VmTest, TripleFaultStopsTheVm) {
  // ud2 with an empty IDT: #UD, then #DF, then a triple fault (shutdown).
  auto vm = BuildForBoot(Config(testing::MakeElf({0x0f, 0x0b}, kKernelAddr, false)), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(VcpuThreads(), 0);
}

TEST_F(VmTest, SerialOutputGoesToTheConfiguredFile) {
  VmConfig config = Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0));
  files_.push_back(testing::WriteTempFile({'o', 'l', 'd', '\n'}));
  config.serial.serial_out_path = files_.back();
  auto vm = BuildForBoot(config, Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  vm->reset();
  EXPECT_EQ(Console(), "") << "nothing on the default output";
  char buf[16] = {};
  int fd = open(files_.back().c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(read(fd, buf, sizeof(buf)), 7);
  close(fd);
  EXPECT_STREQ(buf, "old\nhi\n") << "appended";
}

TEST_F(VmTest, SerialOutputPathErrors) {
  VmConfig config = Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0));
  config.serial.serial_out_path = "/nonexistent/dir/console.log";
  auto missing = BuildForBoot(config, Io());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("serial.serial_out_path /nonexistent/dir"),
            std::string::npos);

  char fifo[] = "/tmp/ember-fifo-XXXXXX";
  ASSERT_NE(mkdtemp(fifo), nullptr);
  std::string path = std::string(fifo) + "/out";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  config.serial.serial_out_path = path;
  auto no_reader = BuildForBoot(config, Io());
  EXPECT_FALSE(no_reader.ok()) << "a FIFO without a reader fails instead of hanging";
  unlink(path.c_str());
  rmdir(fifo);
}

TEST_F(VmTest, LongModeGuestWritesConsoleAndResets) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kHelloAndReset, kKernelAddr, false)), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(Console(), "hi\n");
}

TEST_F(VmTest, SmpGuestStopsEveryVcpu) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0), 4), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(VcpuThreads(), 0);
}

TEST_F(VmTest, PausedVcpusDoNotRun) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kCountUntilTold, kKernelAddr, true, 0)), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  Vm& v = **vm;
  int code = -1;
  std::thread vmm([&] { code = v.Run(); });
  auto count = [&] { return *v.memory().ReadObj<uint32_t>(0x3000); };
  for (int i = 0; i < 1000 && count() == 0; i++) usleep(10000);
  ASSERT_GT(count(), 0u) << "the guest runs";

  v.Pause();
  EXPECT_TRUE(v.paused());
  uint32_t frozen = count();
  usleep(50000);
  EXPECT_EQ(count(), frozen) << "no vCPU runs while paused";
  v.Resume();
  for (int i = 0; i < 2000 && count() == frozen; i++) usleep(1000);
  EXPECT_GT(count(), frozen) << "running again";

  ASSERT_TRUE(v.memory().WriteObj<uint32_t>(0x3004, 1).ok());  // the guest resets
  vmm.join();
  EXPECT_EQ(code, kExitOk);
}

// A paused guest's registers, memory and interrupt controllers go into a
// second VM, which carries on where the first stopped.
TEST_F(VmTest, SavedMachineStateCarriesOnInAFreshVm) {
  // 32-bit: 0: inc eax; mov [0x3000], eax; cmp dword [0x3004], 0; je 0
  //         mov al, 0xfe; out 0x64, al; hlt; jmp $-1
  // The count lives in eax: only a restored register file continues it.
  const std::vector<uint8_t> code = {0x40, 0xa3, 0x00, 0x30, 0x00, 0x00, 0x83, 0x3d,
                                     0x04, 0x30, 0x00, 0x00, 0x00, 0x74, 0xf1, 0xb0,
                                     0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd};
  VmConfig config = Config(testing::MakeElf(code, kKernelAddr, true, 0));
  auto first = BuildForBoot(config, Io());
  ASSERT_TRUE(first.ok()) << first.status();
  Vm& a = **first;
  EXPECT_FALSE(a.SaveMachineState().ok()) << "only a paused VM";
  int code_a = -1;
  std::thread vmm([&] { code_a = a.Run(); });
  auto count = [](const Vm& v) { return *v.memory().ReadObj<uint32_t>(0x3000); };
  for (int i = 0; i < 1000 && count(a) < 1000; i++) usleep(10000);
  a.Pause();
  absl::StatusOr<snapshot::MachineState> state = a.SaveMachineState();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->vcpus.size(), 1u);
  // The pause may fall between the inc and the store.
  const uint64_t saved = state->vcpus[0].regs.rax;
  EXPECT_TRUE(saved == count(a) || saved == count(a) + 1u) << saved << " vs " << count(a);
  EXPECT_FALSE(state->vcpus[0].msrs.empty());

  auto second = BuildForBoot(config, Io());
  ASSERT_TRUE(second.ok()) << second.status();
  Vm& b = **second;
  // Guest memory as the snapshot's memory file will carry it.
  auto from = a.memory().Slice(0, 0x4000);
  auto to = b.memory().Slice(0, 0x4000);
  ASSERT_TRUE(from.ok() && to.ok());
  std::copy(from->begin(), from->end(), to->begin());
  ASSERT_TRUE(b.RestoreMachineState(*state).ok());
  ASSERT_TRUE(b.memory().WriteObj<uint32_t>(0x3004, 1).ok());  // stop after one more
  EXPECT_EQ(b.Run(), kExitOk);
  // From the saved rip and eax it stores eax, or increments it once more;
  // a vCPU started afresh would count from its entry value instead.
  EXPECT_TRUE(count(b) == saved || count(b) == saved + 1) << count(b) << " after " << saved;

  snapshot::MachineState wrong = *state;
  wrong.vcpus.push_back(wrong.vcpus[0]);
  auto third = BuildForBoot(config, Io());
  ASSERT_TRUE(third.ok());
  EXPECT_FALSE((*third)->RestoreMachineState(wrong).ok()) << "vCPU counts must match";

  ASSERT_TRUE(a.memory().WriteObj<uint32_t>(0x3004, 1).ok());
  a.Resume();
  vmm.join();
  EXPECT_EQ(code_a, kExitOk);
}

TEST_F(VmTest, ConfigurationErrorsNameWhatIsWrong) {
  VmConfig missing = Config({});
  missing.boot_source->kernel_image_path = "/nonexistent/vmlinux";
  auto a = BuildForBoot(missing, Io());
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(a.status().message().find("/nonexistent/vmlinux"), std::string::npos);

  auto b = BuildForBoot(Config(std::vector<uint8_t>(8192, 'x')), Io());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("neither an ELF vmlinux nor a bzImage"), std::string::npos);

  VmConfig huge = Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0));
  huge.machine.mem_size_mib = 1ULL << 30;
  auto c = BuildForBoot(huge, Io());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("exceeds the host's"), std::string::npos);

  VmConfig many = Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0), 33);
  auto d = BuildForBoot(many, Io());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("vcpu_count"), std::string::npos);

  VmConfig none;
  auto e = BuildForBoot(none, Io());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("boot-source"), std::string::npos);
}

// The command line Ember wrote into guest memory.
std::string GuestCmdline(const Vm& vm) {
  std::vector<uint8_t> bytes(2048);
  EXPECT_TRUE(vm.memory().Read(x86_64::kCmdlineStart, bytes).ok());
  return std::string(reinterpret_cast<const char*>(bytes.data()));
}

TEST_F(VmTest, DrivesAndPartuuidRootReachTheCommandLine) {
  files_.push_back(testing::WriteTempFile(std::vector<uint8_t>(4096)));
  std::string data = files_.back();
  files_.push_back(testing::WriteTempFile(std::vector<uint8_t>(4096)));
  std::string root = files_.back();
  VmConfig config = Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0));
  DriveConfig d1{"data", data};
  DriveConfig d2{"rootfs", root, /*is_root_device=*/true, /*is_read_only=*/true, "1234-abcd-01"};
  config.drives = {d1, d2};
  auto vm = BuildForBoot(config, Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  std::string cmdline = GuestCmdline(**vm);
  size_t first = cmdline.find("virtio_mmio.device=4K@0xc0000000:5");
  size_t second = cmdline.find("virtio_mmio.device=4K@0xc0001000:6");
  EXPECT_NE(first, std::string::npos) << cmdline;
  EXPECT_NE(second, std::string::npos) << cmdline;
  EXPECT_NE(cmdline.find("root=PARTUUID=1234-abcd-01 ro"), std::string::npos) << cmdline;
  EXPECT_EQ(cmdline.find("root=/dev/vda"), std::string::npos);
}

TEST_F(VmTest, KernelTooBigForMemoryIsRefused) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kHelloAndReset, 64 << 20, false)), Io());
  ASSERT_FALSE(vm.ok());
  EXPECT_NE(vm.status().message().find("outside guest memory"), std::string::npos);
}

// vCPU threads exist from the build on, waiting for Run: one paused before
// Run (a snapshot loaded without resume_vm) stays paused until Resume.
TEST_F(VmTest, AVmPausedBeforeRunWaitsForResume) {
  auto vm = BuildForBoot(Config(testing::MakeElf(kCountUntilTold, kKernelAddr, true, 0)), Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  Vm& v = **vm;
  EXPECT_TRUE(VcpuThreadsReach(1)) << "spawned with the VM";
  v.Pause();
  int code = -1;
  std::thread vmm([&] { code = v.Run(); });
  auto count = [&] { return *v.memory().ReadObj<uint32_t>(0x3000); };
  usleep(100000);
  EXPECT_EQ(count(), 0u) << "no vCPU ran while paused";
  v.Resume();
  for (int i = 0; i < 1000 && count() == 0; i++) usleep(10000);
  EXPECT_GT(count(), 0u) << "running after Resume";
  ASSERT_TRUE(v.memory().WriteObj<uint32_t>(0x3004, 1).ok());  // the guest resets
  vmm.join();
  EXPECT_EQ(code, kExitOk);
}

// A restored VM's first vCPU spins for its Start instead of sleeping
// (vcpu.h); a VM loaded paused must still wait for Resume, and one
// dropped unrun must still end its threads.
TEST_F(VmTest, ARestoredVmLoadedPausedWaitsForResume) {
  VmConfig config = Config(testing::MakeElf(kCountUntilTold, kKernelAddr, true, 0));
  auto first = BuildForBoot(config, Io());
  ASSERT_TRUE(first.ok()) << first.status();
  Vm& a = **first;
  a.Pause();
  absl::StatusOr<snapshot::SnapshotState> state = a.CaptureSnapshot();
  ASSERT_TRUE(state.ok()) << state.status();
  files_.push_back(testing::WriteTempFile({}));
  ASSERT_TRUE(a.WriteMemoryFile(files_.back(), false).ok());
  int mem = open(files_.back().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(mem, 0);
  {
    auto unrun = BuildFromSnapshot(config, Io(), *state, mem);
    ASSERT_TRUE(unrun.ok()) << unrun.status();
  }
  EXPECT_TRUE(VcpuThreadsReach(1)) << "the dropped one's thread ended; the first VM's waits";
  auto second = BuildFromSnapshot(config, Io(), *state, mem);
  close(mem);
  ASSERT_TRUE(second.ok()) << second.status();
  Vm& b = **second;
  b.Pause();
  int code = -1;
  std::thread vmm([&] { code = b.Run(); });
  auto count = [&] { return *b.memory().ReadObj<uint32_t>(0x3000); };
  usleep(100000);  // far past the spin
  EXPECT_EQ(count(), 0u) << "no vCPU ran while paused";
  b.Resume();
  for (int i = 0; i < 1000 && count() == 0; i++) usleep(10000);
  EXPECT_GT(count(), 0u) << "running after Resume";
  ASSERT_TRUE(b.memory().WriteObj<uint32_t>(0x3004, 1).ok());  // the guest resets
  vmm.join();
  EXPECT_EQ(code, kExitOk);
}

TEST_F(VmTest, AVmThatNeverRunsEndsItsWaitingThreads) {
  {
    auto vm = BuildForBoot(Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0)), Io());
    ASSERT_TRUE(vm.ok()) << vm.status();
    EXPECT_TRUE(VcpuThreadsReach(1));
  }
  EXPECT_EQ(VcpuThreads(), 0) << "joined when the VM went";
  EXPECT_EQ(Console(), "") << "the guest never ran";
}

// A prepared VM (kernel loaded, vCPUs made before InstanceStart) is used
// only while nothing it was made from has changed.
class PreparedVmTest : public VmTest {
 protected:
  // The kernel file, written long enough ago that a rewrite changes its
  // stamp (boot.cc's Settled).
  VmConfig SettledConfig(const std::vector<uint8_t>& code) {
    VmConfig config = Config(testing::MakeElf(code, kKernelAddr, true, 0));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    return config;
  }
  void Rewrite(const std::string& path, const std::vector<uint8_t>& bytes) {
    int fd = open(path.c_str(), O_WRONLY | O_TRUNC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    close(fd);
  }
};

// kHelloAndReset saying "yo".
std::vector<uint8_t> SaysYo() {
  std::vector<uint8_t> code = kHelloAndReset;
  code[5] = 'y';
  code[8] = 'o';
  return code;
}

TEST_F(PreparedVmTest, IsUsedWhileTheConfigurationHolds) {
  VmConfig config = SettledConfig(kHelloAndReset);
  auto prepared = PreparedVm::Prepare(config);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_TRUE(prepared->Matches(config));
  config.boot_source->boot_args = "console=ttyS0 quiet";  // written at the start
  EXPECT_TRUE(prepared->Matches(config));
  auto vm = BuildForBoot(config, Io(), {}, std::move(*prepared));
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(Console(), "hi\n");
}

// KVM VMs this process holds open.
int KvmVms() {
  int n = 0;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    n += std::filesystem::read_symlink(fd.path(), ec).string() == "anon_inode:kvm-vm";
  }
  return n;
}

// The shell a waiting VMM makes ahead serves the VM built later, and stays
// with the caller while a configuration is refused.
TEST_F(PreparedVmTest, IsBuiltInAShellMadeAhead) {
  VmConfig config = SettledConfig(kHelloAndReset);
  int before = KvmVms();
  absl::StatusOr<VmShell> made = VmShell::Create();
  ASSERT_TRUE(made.ok()) << made.status();
  std::optional<VmShell> shell = std::move(*made);
  EXPECT_EQ(KvmVms(), before + 1);
  VmConfig refused = config;
  refused.boot_source->kernel_image_path = "/nonexistent/vmlinux";
  EXPECT_FALSE(PreparedVm::Prepare(refused, &shell).ok());
  EXPECT_TRUE(shell.has_value());
  auto prepared = PreparedVm::Prepare(config, &shell);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_FALSE(shell.has_value());
  EXPECT_EQ(KvmVms(), before + 1) << "built in the shell's VM, not a second one";
  auto vm = BuildForBoot(config, Io(), {}, std::move(*prepared));
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(Console(), "hi\n");
}

TEST_F(PreparedVmTest, AChangedMachineOrBootSourceIsPreparedAgain) {
  VmConfig config = SettledConfig(kHelloAndReset);
  auto prepared = PreparedVm::Prepare(config);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  VmConfig changed = config;
  changed.machine.mem_size_mib = 64;
  EXPECT_FALSE(prepared->Matches(changed));
  changed = config;
  changed.machine.vcpu_count = 2;
  EXPECT_FALSE(prepared->Matches(changed));
  changed = config;
  changed.machine.track_dirty_pages = true;
  EXPECT_FALSE(prepared->Matches(changed));
  changed = config;
  changed.boot_source->initrd_path = config.boot_source->kernel_image_path;
  EXPECT_FALSE(prepared->Matches(changed));

  changed = config;
  changed.machine.mem_size_mib = 64;
  changed.machine.vcpu_count = 2;
  auto vm = BuildForBoot(changed, Io(), {}, std::move(*prepared));
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->memory().total_size(), uint64_t{64} << 20);
  EXPECT_EQ((*vm)->Run(), kExitOk);
}

TEST_F(PreparedVmTest, AKernelRewrittenAfterLoadingIsReadAgain) {
  VmConfig config = SettledConfig(kHelloAndReset);
  auto prepared = PreparedVm::Prepare(config);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  // Same size, same path: only the file's stamp tells.
  Rewrite(config.boot_source->kernel_image_path, testing::MakeElf(SaysYo(), kKernelAddr, true, 0));
  EXPECT_FALSE(prepared->Matches(config));
  auto vm = BuildForBoot(config, Io(), {}, std::move(*prepared));
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ((*vm)->Run(), kExitOk);
  EXPECT_EQ(Console(), "yo\n");
}

TEST_F(PreparedVmTest, AKernelReplacedByGarbageFailsTheStart) {
  VmConfig config = SettledConfig(kHelloAndReset);
  auto prepared = PreparedVm::Prepare(config);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  std::string garbage = testing::WriteTempFile(std::vector<uint8_t>(4096, 0xcc));
  ASSERT_EQ(rename(garbage.c_str(), config.boot_source->kernel_image_path.c_str()), 0);
  auto vm = BuildForBoot(config, Io(), {}, std::move(*prepared));
  ASSERT_FALSE(vm.ok());
  EXPECT_NE(vm.status().message().find("neither an ELF vmlinux nor a bzImage"),
            std::string::npos)
      << vm.status();
}

TEST_F(PreparedVmTest, AFreshlyWrittenKernelIsNotKept) {
  // Written within a clock tick of loading: a rewrite in the same tick could
  // keep its stamp. The mtime is set a second ahead so that a slow, loaded
  // machine cannot let the tick pass before Prepare looks.
  VmConfig config = Config(testing::MakeElf(kHelloAndReset, kKernelAddr, true, 0));
  timespec ahead;
  clock_gettime(CLOCK_REALTIME, &ahead);
  ahead.tv_sec += 1;
  const timespec times[2] = {ahead, ahead};
  ASSERT_EQ(utimensat(AT_FDCWD, config.boot_source->kernel_image_path.c_str(), times, 0), 0);
  auto prepared = PreparedVm::Prepare(config);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_FALSE(prepared->Matches(config));
}

// A directory in this test process's own mount namespace holding `image`
// as "vmlinux", mounted read-only: with `bind`, a read-only bind mount of
// a writable directory (the file system itself stays writable); without,
// a tmpfs remounted read-only at its superblock. path() is empty where the
// process may not mount (not root). The directories go with it.
class ReadOnlyKernelDir {
 public:
  ReadOnlyKernelDir(ReadOnlyKernelDir&&) = delete;
  ReadOnlyKernelDir(const std::vector<uint8_t>& image, bool bind) {
    if (unshare(CLONE_NEWNS) != 0 ||
        mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return;
    }
    std::string dir = std::filesystem::temp_directory_path() / "ember-ro-XXXXXX";
    if (mkdtemp(dir.data()) == nullptr) return;
    dir_ = dir;
    if (bind) {
      source_ = dir + "-rw";
      std::filesystem::create_directory(source_);
      if (mount(source_.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) != 0) return;
    } else if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=4m") != 0) {
      return;
    }
    mounted_ = true;
    std::ofstream(dir + "/vmlinux", std::ios::binary)
        .write(reinterpret_cast<const char*>(image.data()), image.size());
    unsigned long flags = MS_REMOUNT | MS_RDONLY | (bind ? MS_BIND : 0);
    if (mount(nullptr, dir.c_str(), nullptr, flags, nullptr) == 0) path_ = dir + "/vmlinux";
  }
  ~ReadOnlyKernelDir() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
    if (!source_.empty()) std::filesystem::remove_all(source_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, source_, path_;
  bool mounted_ = false;
};

// Whether this process maps `path` writable: the guest's private mapping
// of a kernel loaded without a copy (boot.h), not the loader's read-only one.
bool MappedWritable(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find(" rw-p ") != std::string::npos && line.ends_with(" " + path)) return true;
  }
  return false;
}

// kHelloAndReset, padded to two pages so that its segment has whole pages,
// in a ReadOnlyKernelDir.
ReadOnlyKernelDir HelloOnReadOnly(bool bind) {
  std::vector<uint8_t> code = kHelloAndReset;
  code.resize(0x2000, 0);
  return ReadOnlyKernelDir(testing::MakeElf(code, kKernelAddr, true, 0), bind);
}

// Kernels on read-only file systems: mapped or copied (boot.h).
class ReadOnlyKernelTest : public VmTest {
 protected:
  // BuildForBoot of kHelloAndReset from `dir`'s kernel.
  absl::StatusOr<std::unique_ptr<Vm>> BuildFrom(const ReadOnlyKernelDir& dir) {
    VmConfig config = Config(kHelloAndReset);
    config.boot_source->kernel_image_path = dir.path();
    return BuildForBoot(config, Io());
  }
  // Runs `vm` to its reset; whether it said "hi" on the way.
  bool RunsAndSaysHi(Vm& vm) { return vm.Run() == kExitOk && Console() == "hi\n"; }
};

TEST_F(ReadOnlyKernelTest, AKernelOnAReadOnlyFileSystemIsMappedNotCopied) {
  ReadOnlyKernelDir dir = HelloOnReadOnly(/*bind=*/false);
  if (dir.path().empty()) GTEST_SKIP() << "needs root to mount a read-only tmpfs";
  auto vm = BuildFrom(dir);
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_TRUE(MappedWritable(dir.path())) << "the guest's pages come from the file";
  EXPECT_TRUE(RunsAndSaysHi(**vm)) << "the guest ran from the mapped pages";
  // Guest memory is private: a write there never reaches the file.
  vm->reset();
  EXPECT_FALSE(MappedWritable(dir.path())) << "unmapped with the VM";
}

TEST_F(ReadOnlyKernelTest, MergeableGuestMemoryMapsTheKernelWithTheRegionsAdvice) {
  // The kernel's mapping replaced part of guest memory's: it gets the
  // region's advice again, so KSM merges the pages the guest writes.
  ReadOnlyKernelDir dir = HelloOnReadOnly(/*bind=*/false);
  if (dir.path().empty()) GTEST_SKIP() << "needs root to mount a read-only tmpfs";
  GuestMemory::SetMergeableByDefault(true);
  auto vm = BuildFrom(dir);
  GuestMemory::SetMergeableByDefault(false);
  if (!vm.ok() && absl::StrContains(vm.status().message(), "KSM")) {
    GTEST_SKIP() << "the host kernel has no KSM";
  }
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(MappedWritable(dir.path()));
  absl::StatusOr<std::span<uint8_t>> kernel = (*vm)->memory().HostRange(kKernelAddr, 0x1000);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  std::string flags = testing::VmFlags(kernel->data());
  EXPECT_NE(flags.find(" mg "), std::string::npos) << flags;
  EXPECT_NE(flags.find(" dc "), std::string::npos) << "no fork copies it: " << flags;
  EXPECT_TRUE(RunsAndSaysHi(**vm));
}

TEST_F(ReadOnlyKernelTest, AKernelBehindAReadOnlyBindMountIsCopied) {
  // The file system under the bind mount stays writable through its other
  // paths, so a running guest could see a rewrite: copied, without a lease
  // (SIGIO is not blocked in this test; in Ember a lease would map it).
  ReadOnlyKernelDir dir = HelloOnReadOnly(/*bind=*/true);
  if (dir.path().empty()) GTEST_SKIP() << "needs root to bind-mount";
  auto vm = BuildFrom(dir);
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_FALSE(MappedWritable(dir.path()));
  EXPECT_TRUE(RunsAndSaysHi(**vm));
}

// A kernel on a writable file system is mapped under a lease
// (file_lease.h), which needs SIGIO blocked, as main.cc has it.
class LeasedKernelTest : public ReadOnlyKernelTest {
 protected:
  void SetUp() override {
    ReadOnlyKernelTest::SetUp();
    sigset_t set = Sigio();
    pthread_sigmask(SIG_BLOCK, &set, &old_mask_);
  }
  void TearDown() override {
    sigset_t set = Sigio();
    const timespec now = {0, 0};
    while (sigtimedwait(&set, nullptr, &now) == SIGIO) {
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
    ReadOnlyKernelTest::TearDown();
  }
  static sigset_t Sigio() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGIO);
    return set;
  }
  // kHelloAndReset, or SaysYo, padded to whole pages.
  static std::vector<uint8_t> Padded(std::vector<uint8_t> code) {
    code.resize(0x2000, 0);
    return testing::MakeElf(code, kKernelAddr, true, 0);
  }
  sigset_t old_mask_;
};

TEST_F(LeasedKernelTest, ARewriteWaitsUntilTheGuestHasItsOwnCopy) {
  VmConfig config = Config(Padded(kHelloAndReset));
  const std::string& path = config.boot_source->kernel_image_path;
  {
    UniqueFd probe(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    absl::StatusOr<FileLease> lease = FileLease::Take(probe.get());
    if (!lease.ok()) GTEST_SKIP() << "the temporary directory takes no lease: " << lease.status();
  }
  auto vm = BuildForBoot(config, Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_TRUE(MappedWritable(path)) << "mapped, not copied, on a writable file system";

  absl::StatusOr<UniqueFd> signals = LeaseSignalFd();
  ASSERT_TRUE(signals.ok()) << signals.status();
  std::thread writer([&] {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(Padded(SaysYo()).data()), Padded(SaysYo()).size());
  });
  pollfd p = {signals->get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 10'000), 1) << "SIGIO when the writer opened the kernel";
  DrainSignalFd(signals->get());
  (*vm)->CopyBrokenLeases();
  writer.join();
  EXPECT_FALSE(MappedWritable(path)) << "the guest's pages are its own now";
  EXPECT_TRUE(RunsAndSaysHi(**vm)) << "the kernel it was built with, not the rewrite";
}

TEST_F(LeasedKernelTest, WithoutSigioBlockedTheKernelIsCopied) {
  sigset_t set = Sigio();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  VmConfig config = Config(Padded(kHelloAndReset));
  auto vm = BuildForBoot(config, Io());
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_FALSE(MappedWritable(config.boot_source->kernel_image_path));
  EXPECT_TRUE(RunsAndSaysHi(**vm));
}

}  // namespace
}  // namespace ember
