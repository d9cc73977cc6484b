#include "src/common/testing/test_images.h"

#include <asm/bootparam.h>
#include <elf.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ember::testing {
namespace {

// resize + copy: vector::insert at the end trips GCC 12's -Warray-bounds.
void Append(std::vector<uint8_t>& image, const std::vector<uint8_t>& bytes) {
  size_t at = image.size();
  image.resize(at + bytes.size());
  std::copy(bytes.begin(), bytes.end(), image.begin() + at);
}

template <typename T>
void Put(std::vector<uint8_t>& image, size_t offset, const T& value) {
  if (image.size() < offset + sizeof(T)) image.resize(offset + sizeof(T));
  std::memcpy(image.data() + offset, &value, sizeof(T));
}

}  // namespace

std::vector<uint8_t> MakeElf(const std::vector<uint8_t>& code, uint64_t paddr, bool pvh,
                             uint64_t pvh_offset) {
  const size_t code_at = 0x1000, note_at = 0x800;
  std::vector<uint8_t> image(code_at, 0);
  Elf64_Ehdr eh = {};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_entry = paddr;
  eh.e_phoff = sizeof(eh);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = pvh ? 2 : 1;
  Put(image, 0, eh);
  Elf64_Phdr load = {};
  load.p_type = PT_LOAD;
  load.p_offset = code_at;
  load.p_paddr = paddr;
  load.p_filesz = code.size();
  load.p_memsz = std::max<uint64_t>(code.size(), 0x2000);
  Put(image, sizeof(eh), load);
  if (pvh) {
    Elf64_Phdr note = {};
    note.p_type = PT_NOTE;
    note.p_offset = note_at;
    note.p_filesz = sizeof(Elf64_Nhdr) + 4 + 8;
    Put(image, sizeof(eh) + sizeof(Elf64_Phdr), note);
    Put(image, note_at, Elf64_Nhdr{4, 8, 18});
    std::memcpy(image.data() + note_at + sizeof(Elf64_Nhdr), "Xen", 4);
    Put<uint64_t>(image, note_at + sizeof(Elf64_Nhdr) + 4, paddr + pvh_offset);
  }
  Append(image, code);
  return image;
}

std::vector<uint8_t> MakeBzImage(uint16_t version, uint16_t xloadflags,
                                 std::vector<uint8_t> payload) {
  if (payload.empty()) payload.assign(0x400, 0x90);
  std::vector<uint8_t> image(3 * 512, 0);
  setup_header hdr = {};
  hdr.setup_sects = 2;
  hdr.boot_flag = 0xaa55;
  hdr.header = 0x53726448;
  hdr.version = version;
  hdr.xloadflags = xloadflags;
  hdr.pref_address = 0x1000000;
  hdr.init_size = 0x100000;
  Put(image, 0x1f1, hdr);
  Append(image, payload);
  return image;
}

std::string WriteTempFile(const std::vector<uint8_t>& bytes) {
  char path[] = "/tmp/ember-test-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return "";
  if (!bytes.empty()) (void)!write(fd, bytes.data(), bytes.size());
  close(fd);
  return path;
}

}  // namespace ember::testing
