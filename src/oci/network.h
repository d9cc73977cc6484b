// A container's network, for its microVM. The VMM's network device is a TAP
// in the container's network namespace (the monitor's). At start, the
// namespace's interface (a CNI plugin's veth, say) is joined to it with tc,
// as Kata Containers' tcfilter mode does: whatever either receives is
// redirected out of the other, so the guest sees the wire the namespace
// was given, and takes that interface's MAC, MTU, addresses and routes
// (agent::NetworkSpec). IPv4 only: the guest has no IPv6.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/agent/protocol.h"

namespace ember::oci {

// The TAP's name for container `id` under `root`: distinct for the
// containers that share one namespace (a pod's), and within IFNAMSIZ.
std::string TapName(const std::string& root, const std::string& id);
// The name the template's VM was made with (its snapshot names it; a
// restore overrides it with the container's).
inline constexpr char kTemplateTap[] = "ember-template";

// Makes a persistent TAP `name` in the current network namespace that
// uid:gid (the jailed VMM) may open; one that is there is reused.
absl::Status MakeTap(const std::string& name, uint32_t uid, uint32_t gid);

// Joins the TAP to the namespace's interface: the first Ethernet one,
// other than a TAP, that has an IPv4 address. Nothing (no network for
// the guest, with *why saying so) when there is none, or when another
// VM's TAP has it already (the containers of a pod share one namespace,
// and only one microVM can have its interface). An error when tc refuses.
absl::StatusOr<std::optional<agent::NetworkSpec>> ConnectTap(const std::string& tap,
                                                             std::string* why);

// Removes the TAP and the redirect into it from whatever interface has
// one. Nothing to do when the TAP is gone.
void RemoveTap(const std::string& tap);

// RemoveTap in the network namespace at `netns_path`, from a child so the
// caller stays where it is.
void RemoveTapIn(const std::string& netns_path, const std::string& tap);

}  // namespace ember::oci
