// Typed configuration of a microVM, as parsed by api/ from the config file
// or API requests. The VMM core never sees JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace ember {

inline constexpr uint32_t kMinVcpus = 1;
inline constexpr uint32_t kMaxVcpus = 32;

struct BootSourceConfig {
  std::string kernel_image_path;
  std::string initrd_path;               // empty: no initrd
  std::optional<std::string> boot_args;  // absent: kDefaultBootArgs
};

struct MachineConfig {
  uint32_t vcpu_count = 1;
  uint64_t mem_size_mib = 128;
  bool track_dirty_pages = false;
};

struct SerialConfig {
  // A file or named pipe for the guest's console output; empty: stdout.
  std::string serial_out_path;
};

struct VmConfig {
  std::optional<BootSourceConfig> boot_source;
  MachineConfig machine;
  SerialConfig serial;
};

// The guest command line when boot-source has no boot_args.
inline constexpr char kDefaultBootArgs[] = "console=ttyS0 reboot=k panic=1 pci=off";

// Checks what can be checked without touching the host: ranges and
// required parts. Messages name the field.
absl::Status ValidateMachineConfig(const MachineConfig& m);

}  // namespace ember
