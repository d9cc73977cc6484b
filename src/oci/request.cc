#include "src/oci/request.h"

#include "absl/strings/str_cat.h"
#include "src/oci/vm.h"

namespace ember::oci {

agent::ExecRequest ContainerRequest(const ProcessSpec& process, const std::string& hostname,
                                    std::vector<agent::MountSpec> mounts) {
  agent::ExecRequest r;
  r.flags = agent::ExecRequest::kFlagStdin | agent::ExecRequest::kFlagContainer;
  if (process.terminal) r.flags |= agent::ExecRequest::kFlagTty;
  r.cwd = process.cwd;
  r.argv = process.args;
  r.env = process.env;
  r.container.uid = process.uid;
  r.container.gid = process.gid;
  r.container.groups = process.additional_gids;
  r.container.root_device = kContainerDevice;
  r.container.root_dir = kContainerRootDir;
  r.container.hostname = hostname;
  r.container.mounts = std::move(mounts);
  r.container.set_capabilities = process.has_capabilities;
  r.container.cap_bounding = process.cap_bounding;
  r.container.cap_effective = process.cap_effective;
  r.container.cap_permitted = process.cap_permitted;
  r.container.cap_inheritable = process.cap_inheritable;
  r.container.cap_ambient = process.cap_ambient;
  r.container.no_new_privileges = process.no_new_privileges;
  return r;
}

absl::Status CheckRequest(const agent::ExecRequest& request) {
  std::string payload = agent::EncodeExec(request);
  if (payload.size() > agent::kMaxExecPayload) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the process's args, env and the container's mounts take ", payload.size(),
        " bytes; the guest agent takes at most ", agent::kMaxExecPayload));
  }
  agent::ExecRequest decoded;
  std::string error;
  if (!agent::DecodeExec(payload, &decoded, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("the guest agent would refuse it: ", error));
  }
  return absl::OkStatus();
}

}  // namespace ember::oci
