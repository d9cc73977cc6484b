// Fast start from a template snapshot (issue 18, item 4). `ember-oci
// template` boots the agent's microVM once, with a small placeholder as its
// second drive, waits until the agent answers, pauses it and snapshots it
// into <root>/template. A container then starts by loading that snapshot
// (vsock_override to its own socket) and swapping the placeholder for its
// image with PATCH /drives, as Kata does with its placeholder drives: the
// agent mounts the drive only when the container's process starts, after
// the swap. Cold boot stays: without a template of the container's size,
// or with the annotation io.ember.boot=cold or EMBER_OCI_BOOT=cold.
//
// A template is of one microVM size (vCPUs, memory): the default size's in
// <root>/template, others' in <root>/template-<vcpus>x<mem_mib>.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "src/oci/vm.h"

namespace ember::oci {

struct TemplateFiles {
  std::string dir;          // <root>/template or <root>/template-<v>x<m>
  std::string snapshot;     // vm.snap
  std::string memory;       // vm.mem
  std::string agent_rootfs; // agent.ext4: the agent's root as it was snapshotted
  std::string placeholder;  // placeholder.ext4
  bool jailed = false;      // paths in the snapshot are the jail's ("/agent.ext4")
};
TemplateFiles TemplatePaths(const std::string& root, const VmSize& size);
// Whether a complete template of `size` is there (written last: its
// "jailed" mark), made with the agent's root file system `agent_rootfs`
// as it is now (a rebuilt agent may speak another protocol; "" skips the
// check).
bool TemplateReady(const std::string& root, const VmSize& size, const std::string& agent_rootfs,
                   TemplateFiles* files);
// What identifies a version of `path`: size, inode and mtime; "" if absent.
std::string FileStamp(const std::string& path);

// Boots a microVM of `size`, waits for the agent, snapshots; replaces an
// older template of that size. The VM's TAP is made in a new network
// namespace, which the calling process stays in.
absl::Status BuildTemplate(const VmAssets& assets, const std::string& root, const VmSize& size);

// For a container restored from `t`: links the snapshot's files into its
// jail (nothing to do without one).
absl::Status PrepareRestore(const VmLayout& layout, const TemplateFiles& t);

// In the monitor, after StartVmm with an API socket: loads the snapshot
// with the container's vsock socket and TAP, resumes it and points the
// container drive at its image.
absl::Status RestoreFromTemplate(const VmLayout& layout, const TemplateFiles& t,
                                 const std::string& api_on_host, const std::string& tap);

}  // namespace ember::oci
