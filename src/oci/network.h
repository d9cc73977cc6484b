// A container's network, for its microVM. The VMM's network device is a TAP
// in the container's network namespace (the monitor's). At start, the
// namespace's interface (a CNI plugin's veth, say) is joined to it with tc,
// as Kata Containers' tcfilter mode does: whatever either receives is
// redirected out of the other, so the guest sees the wire the namespace
// was given, and takes that interface's MAC, MTU, addresses and routes
// (agent::NetworkSpec). IPv4 only: the guest has no IPv6.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/agent/protocol.h"

namespace ember::oci {

// config.json's network namespace (`path`: absent, "" or a path) for the
// calling process: joined when it names a path, a new one otherwise.
// Without the entry too (ctr --net-host), or with a path to the host's
// (init's, or the caller's own): a microVM cannot share the host's
// network, and neither its TAP nor a redirect may land there.
absl::Status JoinNetworkNamespace(const std::optional<std::string>& path);
// Whether the namespace file at `path` is init's (the host's network).
bool IsHostNetworkNamespace(const std::string& path);
// Joins the network namespace process `pid` is in.
absl::Status JoinNamespaceOf(pid_t pid);

// Whether container `id` is a Kubernetes pod's sandbox (its pause
// container), as containerd's CRI and CRI-O mark it: of type "sandbox",
// the sandbox's id its own (a container that merely carries the type,
// passed through by a user, is not one). It holds the pod's namespaces and
// runs nothing else, so it gets no microVM, and the network goes to the
// pod's first container.
bool IsPodSandbox(const std::map<std::string, std::string>& annotations, const std::string& id);

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
// other than a TAP, that has an IPv4 address. The guest gets nothing (and
// `why` says why) when there is none, when another VM's TAP has it already
// (the containers of a pod share one namespace, and only one microVM can
// have its interface), when its ingress has tc filters of someone else's
// (Ember's have a priority of their own), or when the namespace is the
// host's.
// An error when the namespace cannot be read or tc refuses. Containers
// connecting in one namespace at once take turns.
struct Connection {
  std::optional<agent::NetworkSpec> network;
  std::string why;
  bool contested = false;  // an interface was there, but not for this VM
};
absl::StatusOr<Connection> ConnectTap(const std::string& tap);

// Removes the TAP and the redirect into it from whatever interface has
// one. Nothing to do when the TAP is gone.
void RemoveTap(const std::string& tap);

// RemoveTap in the network namespace at `netns_path`, from a child so the
// caller stays where it is.
void RemoveTapIn(const std::string& netns_path, const std::string& tap);

}  // namespace ember::oci
