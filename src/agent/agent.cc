#include "src/agent/agent.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdio>
#include <vector>

#include "src/agent/spawn.h"

namespace ember::agent {
namespace {

// What one entry of the poll set is.
struct Slot {
  enum Kind { kListener, kSignals, kStarting, kSession } kind;
  uint64_t session = 0;
  Session::Channel channel = Session::Channel::kSocket;
};

}  // namespace

int Agent::Run() {
  // SIGCHLD and the stop signals arrive as reads in the loop, never as
  // handlers between its steps. spawn.cc unblocks them in each command.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  signals_.reset(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signals_.valid()) {
    std::fprintf(stderr, "ember-agent: signalfd: %s\n", strerror(errno));
    return 1;
  }
  // A client or command that goes away shows up as EPIPE instead.
  signal(SIGPIPE, SIG_IGN);

  std::vector<pollfd> fds;
  std::vector<Slot> slots;
  std::vector<Session::Channel> channels;
  while (!stopping_) {
    fds.clear();
    slots.clear();
    if (sessions_.size() < kMaxSessions) {
      fds.push_back({listener_.get(), POLLIN, 0});
      slots.push_back({Slot::kListener});
    }
    fds.push_back({signals_.get(), POLLIN, 0});
    slots.push_back({Slot::kSignals});
    if (starting_.status.valid()) {
      fds.push_back({starting_.status.get(), POLLIN, 0});
      slots.push_back({Slot::kStarting});
    }
    for (const auto& [id, session] : sessions_) {
      channels.clear();
      session->AddPollFds(&fds, &channels);
      for (auto channel : channels) slots.push_back({Slot::kSession, id, channel});
    }

    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "ember-agent: poll: %s\n", strerror(errno));
      return 1;
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      switch (slots[i].kind) {
        case Slot::kListener:
          Accept();
          break;
        case Slot::kSignals:
          ReapChildren();
          break;
        case Slot::kStarting:
          OnExecDone();
          break;
        case Slot::kSession:
          if (Session* s = Find(slots[i].session)) s->Handle(slots[i].channel, fds[i].revents);
          break;
      }
    }
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second->TakeSpawnRequest()) start_queue_.push_back(it->first);
      it = it->second->closed() ? sessions_.erase(it) : std::next(it);
    }
    StartNext();
  }
  // Stopping: each session's destructor kills its command's group.
  sessions_.clear();
  return 0;
}

void Agent::Accept() {
  while (sessions_.size() < kMaxSessions) {
    int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a connection that died in the backlog
    sessions_.emplace(next_id_++, std::make_unique<Session>(Fd(fd)));
  }
}

void Agent::ReapChildren() {
  signalfd_siginfo info;
  while (read(signals_.get(), &info, sizeof(info)) == sizeof(info)) {
    if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) stopping_ = true;
  }
  // SIGCHLDs coalesce: reap everything that has ended.
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    auto it = children_.find(pid);
    if (it == children_.end()) continue;
    uint64_t id = it->second;
    children_.erase(it);
    if (Session* s = Find(id)) s->OnReaped(status);
  }
}

void Agent::StartNext() {
  while (!starting_.status.valid() && !start_queue_.empty()) {
    uint64_t id = start_queue_.front();
    start_queue_.pop_front();
    Session* session = Find(id);
    if (!session || !session->ready_to_start()) continue;  // its client left meanwhile
    Spawned spawned;
    std::string error;
    if (!Spawn(session->request(), &spawned, &error)) {
      session->OnSpawnError(error);
      continue;
    }
    children_[spawned.pid] = id;
    starting_.session = id;
    starting_.status = std::move(spawned.status_r);
    starting_.request = session->request();
    session->OnSpawned(std::move(spawned));
  }
}

void Agent::OnExecDone() {
  ExecOutcome outcome = ReadExecOutcome(starting_.status.get(), starting_.request);
  starting_.status.reset();
  if (Session* s = Find(starting_.session)) s->OnExecOutcome(outcome);
}

Session* Agent::Find(uint64_t id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

}  // namespace ember::agent
