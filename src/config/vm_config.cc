#include "src/config/vm_config.h"

#include <cctype>
#include <algorithm>
#include <set>

#include "absl/strings/str_format.h"

namespace ember {

absl::Status ValidateMachineConfig(const MachineConfig& m) {
  if (m.vcpu_count < kMinVcpus || m.vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "machine-config.vcpu_count must be between %d and %d, got %d", kMinVcpus, kMaxVcpus,
        m.vcpu_count));
  }
  if (m.smt && m.vcpu_count > 1 && m.vcpu_count % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "machine-config.vcpu_count %d: with smt, the vCPUs are pairs of threads, so it must be "
        "1 or even",
        m.vcpu_count));
  }
  if (m.mem_size_mib == 0) {
    return absl::InvalidArgumentError("machine-config.mem_size_mib must be at least 1");
  }
  // Whole huge pages only: hugetlbfs cannot map less, and THP would leave
  // the tail in small pages.
  if (m.huge_pages != HugePages::kNone && m.mem_size_mib % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "machine-config.mem_size_mib %d must be a multiple of 2 with huge_pages \"%s\"",
        m.mem_size_mib, HugePagesName(m.huge_pages)));
  }
  return absl::OkStatus();
}

absl::Status ValidateBootSource(const BootSourceConfig& boot) {
  if (!boot.boot_args) return absl::OkStatus();
  const std::string& args = *boot.boot_args;
  if (args.size() > kMaxBootArgsBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "The kernel command line is invalid: Inserting string would make command line too "
        "long. (boot-source.boot_args is %d bytes; the limit is %d)",
        args.size(), kMaxBootArgsBytes));
  }
  for (size_t i = 0; i < args.size(); i++) {
    unsigned char c = args[i];
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "The kernel command line is invalid: String contains a non-printable ASCII "
          "character. (boot-source.boot_args has byte 0x%02x at offset %d)",
          c, i));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateVsock(const VsockConfig& vsock) {
  if (vsock.guest_cid < kMinGuestCid) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vsock.guest_cid %d is reserved (0-2); use %d or more", vsock.guest_cid, kMinGuestCid));
  }
  if (vsock.uds_path.empty()) {
    return absl::InvalidArgumentError("vsock.uds_path must not be empty");
  }
  // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
  if (vsock.uds_path.size() > 107) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vsock.uds_path is %d bytes; a Unix socket path has at most 107", vsock.uds_path.size()));
  }
  return absl::OkStatus();
}

std::optional<RateLimiterConfig> ApplyUpdate(const std::optional<RateLimiterConfig>& current,
                                             const RateLimiterUpdate& update) {
  RateLimiterConfig next = current.value_or(RateLimiterConfig{});
  if (update.bandwidth) next.bandwidth = *update.bandwidth;
  if (update.ops) next.ops = *update.ops;
  if (!next.bandwidth && !next.ops) return std::nullopt;
  return next;
}

bool ValidDeviceId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

absl::Status ValidateDrives(const std::vector<DriveConfig>& drives) {
  std::set<std::string> ids;
  int roots = 0;
  for (const DriveConfig& d : drives) {
    if (!ValidDeviceId(d.drive_id)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "drives: drive_id '%s' must be 1-64 letters, digits, '-' or '_'", d.drive_id));
    }
    if (!ids.insert(d.drive_id).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("drives: drive_id '%s' is used twice", d.drive_id));
    }
    roots += d.is_root_device;
  }
  if (roots > 1) {
    return absl::InvalidArgumentError("drives: only one drive can have is_root_device true");
  }
  return absl::OkStatus();
}

absl::Status ValidateMemoryHotplug(const MemoryHotplugConfig& c) {
  if (c.block_size_mib < 2 || (c.block_size_mib & (c.block_size_mib - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory-hotplug.block_size_mib %d must be a power of 2 of at least 2", c.block_size_mib));
  }
  if (c.slot_size_mib < 128 || c.slot_size_mib % c.block_size_mib != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory-hotplug.slot_size_mib %d must be at least 128 and a multiple of block_size_mib "
        "(%d)",
        c.slot_size_mib, c.block_size_mib));
  }
  if (c.total_size_mib < c.slot_size_mib || c.total_size_mib % c.slot_size_mib != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory-hotplug.total_size_mib %d must be a non-zero multiple of slot_size_mib (%d)",
        c.total_size_mib, c.slot_size_mib));
  }
  return absl::OkStatus();
}

absl::Status ValidatePmem(const std::vector<PmemConfig>& pmem,
                          const std::vector<DriveConfig>& drives) {
  std::set<std::string> ids;
  int roots = 0;
  for (const PmemConfig& p : pmem) {
    if (!ValidDeviceId(p.id)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("pmem: id '%s' must be 1-64 letters, digits, '-' or '_'", p.id));
    }
    if (!ids.insert(p.id).second) {
      return absl::InvalidArgumentError(absl::StrFormat("pmem: id '%s' is used twice", p.id));
    }
    roots += p.root_device;
  }
  bool root_drive = std::any_of(drives.begin(), drives.end(),
                                [](const DriveConfig& d) { return d.is_root_device; });
  // Firecracker's two sentences, then ours.
  if (roots == 1 && root_drive) {
    return absl::InvalidArgumentError(
        "Pmem config error: Attempt to add pmem as a root device while the root device defined "
        "as a block device. Only one device, pmem or drive, can be the root device.");
  }
  if (roots > 1) {
    return absl::InvalidArgumentError(
        "Pmem config error: A root pmem device already exist. Only one device, pmem or drive, "
        "can be the root device.");
  }
  return absl::OkStatus();
}

absl::Status ValidateBalloon(const BalloonConfig& balloon, const MachineConfig& machine) {
  if (balloon.amount_mib > machine.mem_size_mib) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Amount of pages requested is too large. balloon.amount_mib %d is more "
                        "than machine-config.mem_size_mib %d",
                        balloon.amount_mib, machine.mem_size_mib));
  }
  return absl::OkStatus();
}

absl::Status ValidateNet(const std::vector<NetConfig>& net) {
  std::set<std::string> ids, taps;
  for (const NetConfig& n : net) {
    if (!ValidDeviceId(n.iface_id)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "network-interfaces: iface_id '%s' must be 1-64 letters, digits, '-' or '_'",
          n.iface_id));
    }
    // IFNAMSIZ is 16 with the NUL.
    if (n.host_dev_name.empty() || n.host_dev_name.size() > 15 ||
        n.host_dev_name.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "network-interfaces[%s].host_dev_name '%s' must be 1-15 characters without '/'",
          n.iface_id, n.host_dev_name));
    }
    if (!ids.insert(n.iface_id).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("network-interfaces: iface_id '%s' is used twice", n.iface_id));
    }
    if (!taps.insert(n.host_dev_name).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "network-interfaces: host_dev_name '%s' is used twice", n.host_dev_name));
    }
  }
  return absl::OkStatus();
}

DriveConfig* FindDrive(VmConfig& config, const std::string& drive_id) {
  for (DriveConfig& d : config.drives) {
    if (d.drive_id == drive_id) return &d;
  }
  return nullptr;
}

absl::Status CheckNetExists(const VmConfig& config, const std::string& iface_id) {
  for (const NetConfig& n : config.net) {
    if (n.iface_id == iface_id) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("there is no network interface '%s'", iface_id));
}

absl::Status CheckBalloonTarget(const VmConfig& config, uint64_t amount_mib) {
  if (!config.balloon) return absl::InvalidArgumentError(kNoBalloon);
  BalloonConfig changed = *config.balloon;
  changed.amount_mib = amount_mib;
  return ValidateBalloon(changed, config.machine);
}

absl::Status ValidateMmds(const MmdsConfig& mmds, const std::vector<NetConfig>& net) {
  // Firecracker's MmdsConfigError messages.
  const uint32_t a = mmds.ipv4_address;
  const uint32_t third = (a >> 8) & 0xff;
  if ((a >> 16) != 0xa9fe || third == 0 || third == 0xff) {
    return absl::InvalidArgumentError("The MMDS IPv4 address is not link local.");
  }
  if (mmds.network_interfaces.empty()) {
    return absl::InvalidArgumentError(
        "The list of network interface IDs that allow forwarding MMDS requests is empty.");
  }
  for (const std::string& id : mmds.network_interfaces) {
    bool found = false;
    for (const NetConfig& n : net) found = found || n.iface_id == id;
    if (!found) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "The list of network interface IDs provided contains at least one ID that does not "
          "correspond to any existing network interface ('%s').",
          id));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember
