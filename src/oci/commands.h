// What ember-oci's commands share (oci_main.cc has the commands, create.cc
// the largest): the log, the containers' state directories and records,
// and files written whole.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "src/agent/fd.h"
#include "src/oci/args.h"
#include "src/oci/log.h"
#include "src/oci/state.h"

namespace ember::oci::cli {

extern Logger logger;

// Logs `message` as an error (runc's form) and returns `code`.
int Error(const std::string& message, int code = kExitError);

// The container's state directory.
std::string Dir(const CommandLine& cl, const std::string& id);

// Held by the commands that read and then write a container's record
// (create, start, pause, resume, delete), so that two at once do not lose
// one's change (a pause during start's hooks). Released when the returned
// descriptor closes; an invalid one when the container's directory is not
// there (Load then says so).
agent::Fd LockContainer(const CommandLine& cl, const std::string& id);

// Written to a temporary name and renamed: a reader never sees half of it.
bool WriteFileAtomic(const std::string& path, const std::string& text);
std::string ReadFile(const std::string& path, bool* ok);

absl::StatusOr<ContainerRecord> Load(const CommandLine& cl, const std::string& id);
bool Save(const CommandLine& cl, const ContainerRecord& r);

double Seconds(std::chrono::steady_clock::time_point since);
bool ParseSize(const std::string& text, uint32_t min, uint32_t max, uint32_t* out);
// The pid file as runc writes it: the number alone, written whole.
bool WritePidFile(const std::string& path, pid_t pid);

int Create(const CommandLine& cl);

}  // namespace ember::oci::cli
