#include "src/vmm/loader/kernel_loader.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "src/common/testing/test_images.h"

namespace ember {
namespace {

using x86_64::BootProtocol;

constexpr uint64_t kLoadAddr = 0x200000;
const std::vector<uint8_t> kCode = {0xf4, 0xf4, 0xf4, 0xf4};

template <typename T>
void Put(std::vector<uint8_t>& image, size_t offset, const T& value) {
  std::memcpy(image.data() + offset, &value, sizeof(T));
}

std::vector<uint8_t> MakeElf(bool pvh_note, uint64_t paddr = kLoadAddr) {
  return testing::MakeElf(kCode, paddr, pvh_note, 2);
}
using testing::MakeBzImage;

GuestMemory Memory(uint64_t size) {
  auto mem = GuestMemory::Create({{0, size}});
  EXPECT_TRUE(mem.ok());
  return std::move(*mem);
}

TEST(ElfLoaderTest, LoadsSegmentsAndUsesE_entryWithoutPvhNote) {
  GuestMemory mem = Memory(16 << 20);
  auto k = LoadKernel(mem, MakeElf(false), "vmlinux");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->protocol, BootProtocol::kLinux64);
  EXPECT_EQ(k->entry, kLoadAddr);
  EXPECT_EQ(k->end, kLoadAddr + 0x2000);
  EXPECT_FALSE(k->header);
  std::vector<uint8_t> loaded(kCode.size());
  ASSERT_TRUE(mem.Read(kLoadAddr, loaded).ok());
  EXPECT_EQ(loaded, kCode);
}

TEST(ElfLoaderTest, PrefersThePvhEntry) {
  GuestMemory mem = Memory(16 << 20);
  auto k = LoadKernel(mem, MakeElf(true), "vmlinux");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->protocol, BootProtocol::kPvh);
  EXPECT_EQ(k->entry, kLoadAddr + 2);
}

TEST(ElfLoaderTest, RefusesMalformedImages) {
  GuestMemory mem = Memory(16 << 20);
  struct Case {
    const char* name;
    std::vector<uint8_t> image;
    const char* message;
  };
  std::vector<Case> cases;
  std::vector<uint8_t> elf = MakeElf(true);

  std::vector<uint8_t> bad_class = elf;
  bad_class[EI_CLASS] = ELFCLASS32;
  cases.push_back({"32-bit", bad_class, "64-bit"});
  std::vector<uint8_t> bad_machine = elf;
  Put<uint16_t>(bad_machine, offsetof(Elf64_Ehdr, e_machine), EM_AARCH64);
  cases.push_back({"arm64", bad_machine, "x86-64"});
  std::vector<uint8_t> bad_phoff = elf;
  Put<uint64_t>(bad_phoff, offsetof(Elf64_Ehdr, e_phoff), 1ULL << 40);
  cases.push_back({"phoff past end", bad_phoff, "program headers"});
  std::vector<uint8_t> huge_phnum = elf;
  Put<uint16_t>(huge_phnum, offsetof(Elf64_Ehdr, e_phnum), 0xffff);
  cases.push_back({"phnum past end", huge_phnum, "program headers"});
  std::vector<uint8_t> bad_offset = elf;
  Put<uint64_t>(bad_offset, sizeof(Elf64_Ehdr) + offsetof(Elf64_Phdr, p_offset), UINT64_MAX - 2);
  cases.push_back({"segment offset past end", bad_offset, "past the end"});
  std::vector<uint8_t> file_gt_mem = elf;
  Put<uint64_t>(file_gt_mem, sizeof(Elf64_Ehdr) + offsetof(Elf64_Phdr, p_memsz), 1);
  cases.push_back({"filesz > memsz", file_gt_mem, "more file bytes"});
  cases.push_back({"below 1 MiB", MakeElf(false, 0x8000), "below 1 MiB"});
  cases.push_back({"outside memory", MakeElf(false, 64 << 20), "outside guest memory"});
  std::vector<uint8_t> wrapping = MakeElf(false, UINT64_MAX - 0xfff);
  cases.push_back({"wrapping address", wrapping, "outside guest memory"});
  std::vector<uint8_t> loopy_note = elf;  // a note whose sizes would wrap
  Put<Elf64_Nhdr>(loopy_note, 0x800, Elf64_Nhdr{0xfffffffc, 0xfffffffc, 18});
  cases.push_back({"note sizes wrap", loopy_note, nullptr});

  for (const Case& c : cases) {
    auto k = LoadKernel(mem, c.image, "vmlinux");
    if (c.message == nullptr) continue;  // only "does not crash"
    ASSERT_FALSE(k.ok()) << c.name;
    EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(k.status().message().find(c.message), std::string::npos)
        << c.name << ": " << k.status().message();
    EXPECT_NE(k.status().message().find("vmlinux"), std::string::npos) << "names the file";
  }
}

TEST(ElfLoaderTest, EveryTruncationFailsCleanly) {
  GuestMemory mem = Memory(16 << 20);
  std::vector<uint8_t> elf = MakeElf(true);
  for (size_t len = 0; len < elf.size(); len++) {
    std::vector<uint8_t> cut(elf.begin(), elf.begin() + len);
    EXPECT_FALSE(LoadKernel(mem, cut, "vmlinux").ok()) << "length " << len;
  }
}

TEST(BzImageLoaderTest, LoadsAt1MiBWith64BitEntry) {
  GuestMemory mem = Memory(32 << 20);
  std::vector<uint8_t> image = MakeBzImage();
  auto k = LoadKernel(mem, image, "bzImage");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->protocol, BootProtocol::kLinux64);
  EXPECT_EQ(k->entry, 0x100000u + 0x200);
  ASSERT_TRUE(k->header);
  EXPECT_EQ(k->header->setup_sects, 2);
  EXPECT_EQ(k->end, 0x1000000u + 0x100000);
  std::vector<uint8_t> first(4);
  ASSERT_TRUE(mem.Read(0x100000, first).ok());
  EXPECT_EQ(first, std::vector<uint8_t>(4, 0x90));
}

TEST(BzImageLoaderTest, RefusesOldOrBrokenImages) {
  GuestMemory mem = Memory(32 << 20);
  auto old = LoadKernel(mem, MakeBzImage(0x020b), "bzImage");
  ASSERT_FALSE(old.ok());
  EXPECT_NE(old.status().message().find("64-bit entry"), std::string::npos);
  EXPECT_FALSE(LoadKernel(mem, MakeBzImage(0x020f, 0), "bzImage").ok());

  std::vector<uint8_t> no_payload = MakeBzImage();
  no_payload.resize(3 * 512);
  EXPECT_FALSE(LoadKernel(mem, no_payload, "bzImage").ok());

  GuestMemory small = Memory(8 << 20);
  auto too_small = LoadKernel(small, MakeBzImage(), "bzImage");
  ASSERT_FALSE(too_small.ok());
  EXPECT_NE(too_small.status().message().find("needs guest memory"), std::string::npos);
}

TEST(BzImageLoaderTest, EveryTruncationFailsOrLoadsCleanly) {
  GuestMemory mem = Memory(32 << 20);
  std::vector<uint8_t> image = MakeBzImage();
  size_t accepted = 0;
  for (size_t len = 0; len < image.size(); len += 7) {
    std::vector<uint8_t> cut(image.begin(), image.begin() + len);
    auto k = ParseKernel(mem, cut, "bzImage");
    if (!k.ok()) continue;
    accepted++;
    // Whatever is accepted copies only bytes the truncated file has.
    for (const KernelSegment& seg : k->segments) {
      EXPECT_LE(seg.file_offset + seg.size, len) << "length " << len;
      EXPECT_TRUE(mem.Contains(seg.guest_addr, seg.size));
    }
  }
  EXPECT_GT(accepted, 0u) << "a bzImage cut inside its payload still loads";
}

TEST(KernelLoaderTest, NamesTheFileWhenItIsNotAKernel) {
  GuestMemory mem = Memory(16 << 20);
  std::vector<uint8_t> text(4096, 'x');
  auto k = LoadKernel(mem, text, "/tmp/notes.txt");
  ASSERT_FALSE(k.ok());
  EXPECT_EQ(k.status().message(), "/tmp/notes.txt is neither an ELF vmlinux nor a bzImage");
}

// Whether the mapping holding `addr` is advised MADV_HUGEPAGE ("hg" among
// its VmFlags in /proc/self/smaps).
bool HugeAdvised(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  uintptr_t at = reinterpret_cast<uintptr_t>(addr);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t start, end;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &start, &end) == 2) {
      inside = start <= at && at < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line.find(" hg") != std::string::npos;
    }
  }
  return false;
}

// vmlinux's layout: text at 16 MiB, then a gap, then data, per-CPU data and
// init+bss adjoining from 26 MiB to past 28 MiB; shifted so that guest
// and host 2 MiB blocks agree, whatever the host mapping's alignment.
TEST(KernelLoaderTest, HugePagesCoverTheKernelsRunsButNotTheGapsBetween) {
  if (access("/sys/kernel/mm/transparent_hugepage", F_OK) != 0) {
    GTEST_SKIP() << "no transparent huge pages on this host";
  }
  constexpr uint64_t kHuge = 2 << 20;
  GuestMemory mem = Memory(64 << 20);
  uint64_t shift = (kHuge - reinterpret_cast<uintptr_t>(mem.regions()[0].host) % kHuge) % kHuge;
  LoadedKernel kernel;
  kernel.segments = {{0x200000, shift + 0x1000000, 0x886140, 0x886140},
                     {0xc00000, shift + 0x1a00000, 0xb8000, 0xb8000},
                     {0xe00000, shift + 0x1ab8000, 0x20d68, 0x20d68},
                     {0xed9000, shift + 0x1ad9000, 0x8e000, 0x13d000}};
  AdviseKernelHugePages(mem, kernel);
  auto at = [&](uint64_t guest) { return mem.regions()[0].host + shift + guest; };
  EXPECT_TRUE(HugeAdvised(at(0x1400000)));   // the middle of the text
  EXPECT_FALSE(HugeAdvised(at(0x1900000)));  // the gap after it
  EXPECT_TRUE(HugeAdvised(at(0x1a00000)));   // data to bss: one run
  EXPECT_FALSE(HugeAdvised(at(0x1c00000)));  // the run's last, partial block
  EXPECT_FALSE(HugeAdvised(at(0x3000000)));  // past the kernel
}

}  // namespace
}  // namespace ember
