#include "src/vmm/arch/x86_64/mptable.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "src/vmm/arch/x86_64/layout.h"

namespace ember::x86_64 {
namespace {

// Entry layouts from the MP specification, chapter 4.
#pragma pack(push, 1)
struct MpFloatingPointer {
  char signature[4];
  uint32_t physptr;
  uint8_t length;  // in 16-byte units
  uint8_t spec;
  uint8_t checksum;
  uint8_t feature[5];
};
struct MpConfigHeader {
  char signature[4];
  uint16_t length;
  uint8_t spec;
  uint8_t checksum;
  char oem[8];
  char product[12];
  uint32_t oem_ptr;
  uint16_t oem_size;
  uint16_t entry_count;
  uint32_t lapic_addr;
  uint16_t ext_length;
  uint8_t ext_checksum;
  uint8_t reserved;
};
struct MpProcessor {
  uint8_t type;
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;
  uint32_t signature;
  uint32_t features;
  uint32_t reserved[2];
};
struct MpBus {
  uint8_t type;
  uint8_t bus_id;
  char bus_type[6];
};
struct MpIoapic {
  uint8_t type;
  uint8_t apic_id;
  uint8_t apic_version;
  uint8_t flags;
  uint32_t addr;
};
struct MpInterrupt {
  uint8_t type;
  uint8_t irq_type;
  uint16_t irq_flags;
  uint8_t src_bus;
  uint8_t src_irq;
  uint8_t dst_apic;
  uint8_t dst_pin;
};
#pragma pack(pop)
static_assert(sizeof(MpFloatingPointer) == 16 && sizeof(MpConfigHeader) == 44);
static_assert(sizeof(MpProcessor) == 20 && sizeof(MpInterrupt) == 8);

enum : uint8_t { kEntryProcessor, kEntryBus, kEntryIoapic, kEntryIoInterrupt, kEntryLocalInterrupt };
enum : uint8_t { kIrqInt = 0, kIrqNmi = 1, kIrqExtInt = 3 };
constexpr uint8_t kCpuEnabled = 1;
constexpr uint8_t kCpuBootstrap = 2;
constexpr uint8_t kLapicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;
constexpr uint8_t kAllLapics = 0xff;
// CPU signature (family 6) and feature flags (FPU, APIC) the spec asks for.
constexpr uint32_t kCpuSignature = 0x600;
constexpr uint32_t kCpuFeatures = (1 << 0) | (1 << 9);

uint8_t Checksum(const uint8_t* data, size_t len) {
  uint8_t sum = 0;
  for (size_t i = 0; i < len; i++) sum += data[i];
  return static_cast<uint8_t>(-sum);
}

template <typename T>
void Append(std::vector<uint8_t>& out, const T& entry) {
  const auto* p = reinterpret_cast<const uint8_t*>(&entry);
  out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace

absl::Status WriteMpTable(const GuestMemory& mem, uint32_t vcpu_count) {
  if (vcpu_count == 0 || vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MP table: vcpu count %d is not in 1..%d", vcpu_count, kMaxVcpus));
  }
  const uint8_t ioapic_id = static_cast<uint8_t>(vcpu_count);

  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (uint32_t i = 0; i < vcpu_count; i++, count++) {
    Append(entries, MpProcessor{kEntryProcessor, static_cast<uint8_t>(i), kLapicVersion,
                                static_cast<uint8_t>(kCpuEnabled | (i == 0 ? kCpuBootstrap : 0)),
                                kCpuSignature, kCpuFeatures, {0, 0}});
  }
  Append(entries, MpBus{kEntryBus, 0, {'I', 'S', 'A', ' ', ' ', ' '}});
  count++;
  Append(entries, MpIoapic{kEntryIoapic, ioapic_id, kIoapicVersion, 1,
                           static_cast<uint32_t>(kIoapicAddr)});
  count++;
  for (uint8_t pin = 0; pin < kIoapicPins; pin++, count++) {
    Append(entries, MpInterrupt{kEntryIoInterrupt, kIrqInt, 0, 0, pin, ioapic_id, pin});
  }
  Append(entries, MpInterrupt{kEntryLocalInterrupt, kIrqExtInt, 0, 0, 0, kAllLapics, 0});
  Append(entries, MpInterrupt{kEntryLocalInterrupt, kIrqNmi, 0, 0, 0, kAllLapics, 1});
  count += 2;

  MpConfigHeader header = {};
  std::memcpy(header.signature, "PCMP", 4);
  header.length = static_cast<uint16_t>(sizeof(header) + entries.size());
  header.spec = 4;
  std::memcpy(header.oem, "EMBER   ", 8);
  std::memcpy(header.product, "MICROVM     ", 12);
  header.entry_count = count;
  header.lapic_addr = static_cast<uint32_t>(kLapicAddr);

  std::vector<uint8_t> table;
  Append(table, header);
  table.insert(table.end(), entries.begin(), entries.end());
  reinterpret_cast<MpConfigHeader*>(table.data())->checksum = Checksum(table.data(), table.size());

  MpFloatingPointer fp = {};
  std::memcpy(fp.signature, "_MP_", 4);
  fp.physptr = static_cast<uint32_t>(kEbdaStart + sizeof(fp));
  fp.length = 1;
  fp.spec = 4;
  fp.checksum = Checksum(reinterpret_cast<const uint8_t*>(&fp), sizeof(fp));

  if (sizeof(fp) + table.size() > 1024) {
    return absl::InternalError("MP table outgrew the 1 KiB below 640 KiB");
  }
  absl::Status st = mem.WriteObj(kEbdaStart, fp);
  if (!st.ok()) return st;
  return mem.Write(kEbdaStart + sizeof(fp), table);
}

}  // namespace ember::x86_64
