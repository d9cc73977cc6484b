// ember-agent: runs commands for the host, one per connection, over vsock
// (the protocol: src/agent/PROTOCOL.md; the host side: ember-exec).
//
//   ember-agent [--listen vsock:PORT | unix:PATH] [--daemon] [--log kmsg]
//
//   --listen  where to accept connections; default vsock:1024 (any CID).
//             unix:PATH is for host-side tests.
//   --daemon  go to the background (a new session, stdio on /dev/null) and
//             let the caller continue; busybox init's sysinit step waits
//             for it (resources/rootfs/inittab says why that and not
//             respawn).
//   --log     kmsg: messages go to the kernel log (/dev/kmsg), off the
//             console that Ember's test protocol reads; default stderr.
//
// Without a vsock device (or a kernel without vsock) the agent does not
// exit: it says so once and tries again every 10 s.
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "src/agent/agent.h"
#include "src/agent/listener.h"

namespace {

using ember::agent::Fd;

constexpr char kUsage[] =
    "usage: ember-agent [--listen vsock:PORT|unix:PATH] [--daemon] [--log kmsg]\n";
constexpr unsigned kRetrySeconds = 10;

int log_fd = 2;
bool log_kmsg = false;

// One line per call; to /dev/kmsg each write is one record, "<N>" its level.
void Log(int level, const char* format, ...) {
  char line[512];
  int n = log_kmsg ? std::snprintf(line, sizeof(line), "<%d>", level) : 0;
  n += std::snprintf(line + n, sizeof(line) - n, "ember-agent: ");
  va_list args;
  va_start(args, format);
  int m = std::vsnprintf(line + n, sizeof(line) - n - 1, format, args);
  va_end(args);
  n = std::min<int>(n + std::max(m, 0), sizeof(line) - 2);
  line[n++] = '\n';
  (void)!write(log_fd, line, n);
}

// Commands get fresh descriptors 0-2 by dup2 (spawn.cc), which is only
// right when the agent's own pipes never land on 0-2: keep them taken.
void KeepStdioOpen() {
  int fd;
  while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
  }
  if (fd > 2) close(fd);
}

void Daemonize() {
  pid_t pid = fork();
  if (pid < 0) {
    Log(3, "fork: %s; staying in the foreground", strerror(errno));
    return;
  }
  if (pid > 0) _exit(0);
  setsid();
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    for (int i = 0; i <= 2; ++i) dup2(null, i);
    if (null > 2) close(null);
  }
}

}  // namespace

int main(int argc, char** argv) {
  KeepStdioOpen();
  std::string listen = "vsock:" + std::to_string(ember::agent::kDefaultPort);
  bool daemon = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (arg == "--daemon") {
      daemon = true;
    } else if (arg == "--log" && i + 1 < argc && std::string(argv[i + 1]) == "kmsg") {
      ++i;
      log_kmsg = true;
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  if (log_kmsg) {
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      log_fd = fd;
    } else {
      log_kmsg = false;
    }
  }
  ember::agent::ListenAddress address;
  std::string error;
  if (!ember::agent::ParseListenAddress(listen, &address, &error)) {
    Log(3, "%s", error.c_str());
    return 2;
  }

  Fd listener = ember::agent::OpenListener(address, &error);
  if (daemon) Daemonize();
  if (!listener.valid()) {
    // Exiting would only have init start us again at once, in a loop.
    Log(4, "cannot listen on %s (%s); trying again every %u s", listen.c_str(), error.c_str(),
        kRetrySeconds);
    while (!listener.valid()) {
      sleep(kRetrySeconds);
      listener = ember::agent::OpenListener(address, &error);
    }
  }
  Log(6, "listening on %s", listen.c_str());
  return ember::agent::Agent(std::move(listener)).Run();
}
