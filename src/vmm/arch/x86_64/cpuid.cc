#include "src/vmm/arch/x86_64/cpuid.h"

#include <algorithm>
#include <bit>

namespace ember::x86_64 {
namespace {

constexpr uint32_t kLeafVendor = 0x0;
constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;
constexpr uint32_t kLeafTopology = 0xb;
constexpr uint32_t kLeafTopologyV2 = 0x1f;
constexpr uint32_t kLeafExtendedMax = 0x80000000;
constexpr uint32_t kLeafExtendedFeatures = 0x80000001;
constexpr uint32_t kLeafAddressSizes = 0x80000008;
constexpr uint32_t kLeafAmdTopology = 0x8000001e;
constexpr uint32_t kLeafAmdCacheParams = 0x8000001d;

constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEdxHtt = 1u << 28;
constexpr uint32_t kEcxTopologyExtensions = 1u << 22;
constexpr uint32_t kAmdVendorEbx = 0x68747541;  // "Auth"enticAMD

// Leaf 0xb/0x1f level types.
constexpr uint32_t kLevelSmt = 1;
constexpr uint32_t kLevelCore = 2;

// Bits of APIC id that number the cores of one package.
uint32_t CoreIdBits(uint32_t count) { return count <= 1 ? 0 : std::bit_width(count - 1); }

bool IsAmd(const CpuidEntries& entries) {
  for (const kvm_cpuid_entry2& e : entries) {
    if (e.function == kLeafVendor) return e.ebx == kAmdVendorEbx;
  }
  return false;
}

// Subleaves 0..2 of a topology leaf: SMT (the threads of a core), core
// (all of the package's), then invalid. The thread is the APIC id's low bit
// when cores have two.
void AppendTopologyLeaf(CpuidEntries& out, uint32_t leaf, uint32_t apic_id, uint32_t count,
                        uint32_t threads) {
  const uint32_t shifts[] = {threads > 1 ? 1u : 0u, CoreIdBits(count), 0};
  const uint32_t cpus[] = {threads, count, 0};
  const uint32_t types[] = {kLevelSmt, kLevelCore, 0};
  for (uint32_t sub = 0; sub < 3; sub++) {
    kvm_cpuid_entry2 e = {};
    e.function = leaf;
    e.index = sub;
    e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e.eax = shifts[sub];
    e.ebx = cpus[sub];
    e.ecx = (types[sub] << 8) | sub;
    e.edx = apic_id;
    out.push_back(e);
  }
}

}  // namespace

CpuidEntries FilterCpuid(const CpuidEntries& supported, uint32_t index, uint32_t count,
                         bool smt) {
  const bool amd = IsAmd(supported);
  const uint32_t threads = smt && count > 1 ? 2 : 1;
  const uint32_t cores = count / threads;
  CpuidEntries in = supported;
  if (amd) {
    // As Firecracker: an AMD guest learns its threads and cores from leaf
    // 0x8000001e, which a CPU without topology extensions (an emulated
    // one) lacks; it is only a description, so add it.
    const bool has = std::any_of(in.begin(), in.end(), [](const kvm_cpuid_entry2& e) {
      return e.function == kLeafAmdTopology;
    });
    if (!has) in.push_back(kvm_cpuid_entry2{.function = kLeafAmdTopology});
  }
  CpuidEntries out;
  bool had_topology = false, had_topology_v2 = false;
  for (kvm_cpuid_entry2 e : in) {
    switch (e.function) {
      case kLeafFeatures:
        // EBX[31:24] initial APIC id, [23:16] logical processors per package.
        e.ebx = (e.ebx & 0xffff) | (index << 24) | ((count & 0xff) << 16);
        e.ecx |= kEcxHypervisor;
        e.edx = count > 1 ? (e.edx | kEdxHtt) : (e.edx & ~kEdxHtt);
        break;
      case kLeafCacheParams:
      case kLeafAmdCacheParams: {
        // [25:14] threads sharing the cache - 1: each core (its threads)
        // has its own L1 and L2, all share L3; on Intel, [31:26] cores per
        // package - 1 (reserved on AMD). The null subleaf that ends the
        // list stays as it is.
        if ((e.eax & 0x1f) == 0) break;
        uint32_t level = (e.eax >> 5) & 0x7;
        uint32_t sharing = level >= 3 ? count - 1 : threads - 1;
        e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14);
        if (e.function == kLeafCacheParams) e.eax |= ((cores - 1) & 0x3f) << 26;
        else e.eax &= ~(0x3fu << 26);
        break;
      }
      case kLeafTopology:
        had_topology = true;
        continue;  // rebuilt below
      case kLeafTopologyV2:
        had_topology_v2 = true;
        continue;
      case kLeafExtendedMax:
        if (amd) e.eax = std::max(e.eax, kLeafAmdTopology);
        break;
      case kLeafExtendedFeatures:
        if (amd) e.ecx |= kEcxTopologyExtensions;
        break;
      case kLeafAddressSizes:
        if (amd) {
          // ECX[7:0] cores - 1, [15:12] APIC id bits for cores.
          e.ecx = (e.ecx & ~0xf0ffu) | ((count - 1) & 0xff) | (CoreIdBits(count) << 12);
        }
        break;
      case kLeafAmdTopology:
        e.eax = index;  // extended APIC id
        e.ebx = ((threads - 1) << 8) | ((index / threads) & 0xff);  // threads a core - 1, core id
        e.ecx = 0;  // node 0, one node per package
        break;
      default:
        break;
    }
    out.push_back(e);
  }
  if (had_topology) AppendTopologyLeaf(out, kLeafTopology, index, count, threads);
  if (had_topology_v2) AppendTopologyLeaf(out, kLeafTopologyV2, index, count, threads);
  return out;
}

}  // namespace ember::x86_64
