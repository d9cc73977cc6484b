// ember-usercheck: exercises what a guest program needs from the guest
// kernel, one check at a time, and says which one failed.
//
//   ember-usercheck            every check; prints "ok <name>" for each and
//                              exits 0, or "FAIL <name>: why" and exits 1
//   ember-usercheck forkexec N fork + exec /bin/true N times, one at a time;
//                              prints "forkexec_us <median> <min> <max>"
//   ember-usercheck vsock CID PORT
//                              connects to AF_VSOCK CID:PORT, sends stdin,
//                              half-closes, and copies the reply to stdout
//   ember-usercheck xstate     two processes each keep their own value in
//                              the upper half of YMM1 across 200 yields;
//                              exits 1 if either saw the other's (a kernel
//                              that does not switch the AVX state: PVM hosts,
//                              docs/pvm-guest.md); 0 when no AVX is offered
//
// On PVM hosts the guest kernel cannot switch the AVX state between
// processes; glibc is kept off it there (docs/pvm-guest.md).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cpuid.h>
#include <linux/vm_sockets.h>

static int failures;

static void report(const char* name, int ok, const char* why) {
  if (ok) {
    printf("ok %s\n", name);
  } else {
    printf("FAIL %s: %s (errno %d %s)\n", name, why, errno, strerror(errno));
    failures++;
  }
  fflush(stdout);
}

static int64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void check_exit_status(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(42);
  int status = 0;
  int ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 42;
  report("fork-exit-status", ok, "child's _exit(42) not seen by waitpid");
}

static void check_exec(void) {
  pid_t pid = fork();
  if (pid == 0) {
    char* const argv[] = {"sh", "-c", "exit 7", NULL};
    execv("/bin/sh", argv);
    _exit(127);
  }
  int status = 0;
  int ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 7;
  report("exec", ok, "sh -c 'exit 7' did not exit 7");
}

static void check_pipe(void) {
  int fds[2];
  if (pipe(fds) != 0) {
    report("pipe", 0, "pipe");
    return;
  }
  // 256 KiB through a 64 KiB pipe: the writer blocks and is woken.
  enum { kTotal = 256 * 1024 };
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    char buf[4096];
    for (int sent = 0; sent < kTotal; sent += sizeof(buf)) {
      for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (char)((sent + i) * 7);
      if (write(fds[1], buf, sizeof(buf)) != sizeof(buf)) _exit(1);
    }
    _exit(0);
  }
  close(fds[1]);
  char buf[1000];
  long got = 0, bad = 0;
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) {
    for (ssize_t i = 0; i < n; i++) bad += buf[i] != (char)((got + i) * 7);
    got += n;
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  report("pipe", got == kTotal && bad == 0 && status == 0, "bytes lost or changed in a pipe");
}

static volatile sig_atomic_t usr1_seen, chld_seen;
static void on_usr1(int sig) { usr1_seen = sig; }
static void on_chld(int sig) { chld_seen = sig; }

static void check_signals(void) {
  struct sigaction sa = {0};
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_chld;
  sigaction(SIGCHLD, &sa, NULL);
  raise(SIGUSR1);
  report("signal-handler", usr1_seen == SIGUSR1, "SIGUSR1 handler did not run");

  // kill(2) ends a sleeping child; its parent gets SIGCHLD and the signal.
  pid_t pid = fork();
  if (pid == 0) {
    for (;;) pause();
  }
  kill(pid, SIGTERM);
  int status = 0;
  int ok = waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM;
  report("kill", ok, "child not killed by SIGTERM");
  report("sigchld", chld_seen == SIGCHLD, "no SIGCHLD");
  signal(SIGCHLD, SIG_DFL);
}

static __thread int tls_value = 5;

static void* thread_main(void* arg) {
  // Each thread has its own TLS (clone with CLONE_SETTLS).
  tls_value = (int)(intptr_t)arg;
  for (int i = 0; i < 1000; i++) sched_yield();
  return (void*)(intptr_t)(tls_value * 2);
}

static void check_threads(void) {
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, thread_main, (void*)(intptr_t)(100 + i));
  int ok = 1;
  for (int i = 0; i < 4; i++) {
    void* ret;
    pthread_join(t[i], &ret);
    ok &= (intptr_t)ret == 2 * (100 + i);
  }
  report("threads-tls", ok && tls_value == 5, "a thread saw another's TLS");
}

static void check_mmap(void) {
  size_t len = 8u << 20;
  unsigned char* p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    report("mmap", 0, "mmap 8 MiB");
    return;
  }
  for (size_t i = 0; i < len; i += 4096) p[i] = (unsigned char)(i >> 12);
  long bad = 0;
  for (size_t i = 0; i < len; i += 4096) bad += p[i] != (unsigned char)(i >> 12);
  int ok = bad == 0 && munmap(p, len) == 0;
  report("mmap-munmap", ok, "pages did not keep their bytes");
}

static void check_time(void) {
  // clock_gettime through the vDSO agrees with the system call; nanosleep
  // sleeps at least as long as asked.
  struct timespec sys;
  int64_t before = now_ns(CLOCK_MONOTONIC);
  syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &sys);
  int64_t after = now_ns(CLOCK_MONOTONIC);
  int64_t sys_ns = (int64_t)sys.tv_sec * 1000000000 + sys.tv_nsec;
  int ok = getauxval(AT_SYSINFO_EHDR) != 0 && before <= sys_ns && sys_ns <= after;
  report("clock_gettime-vdso", ok, "vDSO clock missing or out of step with the kernel's");
  struct timespec ts = {0, 50 * 1000 * 1000};
  int slept = nanosleep(&ts, NULL) == 0;
  report("nanosleep", slept && now_ns(CLOCK_MONOTONIC) - after >= 50 * 1000 * 1000,
         "slept less than asked");
}

static void check_files(void) {
  const char* path = "/tmp/ember-usercheck";
  int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
  char out[10000], in[10000];
  for (size_t i = 0; i < sizeof(out); i++) out[i] = (char)(i * 13);
  int ok = fd >= 0 && write(fd, out, sizeof(out)) == sizeof(out) && fsync(fd) == 0 &&
           pread(fd, in, sizeof(in), 0) == sizeof(in) && memcmp(in, out, sizeof(in)) == 0;
  struct stat st;
  ok = ok && fstat(fd, &st) == 0 && st.st_size == sizeof(out);
  if (fd >= 0) close(fd);
  ok = ok && unlink(path) == 0;
  report("file-io", ok, "file bytes changed");
}

static int compare_i64(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

static int fork_exec_times(int n) {
  if (n < 1 || n > 1000) return 2;
  int64_t* us = calloc(n, sizeof(*us));
  for (int i = 0; i < n; i++) {
    int64_t start = now_ns(CLOCK_MONOTONIC);
    pid_t pid = fork();
    if (pid == 0) {
      char* const argv[] = {"true", NULL};
      execv("/bin/true", argv);
      _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0) return 1;
    us[i] = (now_ns(CLOCK_MONOTONIC) - start) / 1000;
  }
  qsort(us, n, sizeof(*us), compare_i64);
  printf("forkexec_us %lld %lld %lld\n", (long long)us[n / 2], (long long)us[0],
         (long long)us[n - 1]);
  return 0;
}

// Copies fd `from` to fd `to` until EOF; -1 on an error.
static int copy_all(int from, int to) {
  char buf[65536];
  ssize_t n;
  while ((n = read(from, buf, sizeof(buf))) > 0) {
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(to, buf + off, n - off);
      if (w <= 0) return -1;
      off += w;
    }
  }
  return n < 0 ? -1 : 0;
}

static int vsock_connect(unsigned cid, unsigned port) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (fd < 0 || connect(fd, (struct sockaddr*)&addr, sizeof(addr)) != 0) {
    fprintf(stderr, "vsock %u:%u: %s\n", cid, port, strerror(errno));
    return 1;
  }
  // One direction at a time: no second thread or process.
  if (copy_all(0, fd) != 0 || shutdown(fd, SHUT_WR) != 0 || copy_all(fd, 1) != 0) {
    fprintf(stderr, "vsock %u:%u: %s\n", cid, port, strerror(errno));
    return 1;
  }
  return 0;
}

// What CPUID and XCR0 offer this process, whatever the kernel saves.
static int avx_offered(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX)) return 0;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6) == 6;  // XMM and YMM state enabled
}

static int xstate_check(void) {
  if (!avx_offered()) {
    printf("xstate: no AVX offered to user space\n");
    return 0;
  }
  pid_t child = fork();
  if (child < 0) return 2;
  uint64_t mine[4] = {0x1111111111111111ull * (child == 0 ? 1 : 2), (uint64_t)getpid(),
                      0xabcdef0000000000ull | (uint64_t)getpid(), 0x5555555555555555ull};
  uint64_t seen[4];
  int changed = 0;
  for (int i = 0; i < 200; i++) {
    __asm__ volatile("vmovdqu (%0), %%ymm1" ::"r"(mine) : "xmm1");
    sched_yield();
    for (volatile int spin = 0; spin < 20000; spin++) {
    }
    __asm__ volatile("vmovdqu %%ymm1, (%0)\n vzeroupper" ::"r"(seen) : "xmm1", "memory");
    changed += memcmp(mine, seen, sizeof(mine)) != 0;
  }
  if (child == 0) _exit(changed ? 1 : 0);
  int status = 0;
  waitpid(child, &status, 0);
  int child_changed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  printf("xstate: YMM1 changed under the parent %d/200 times%s\n", changed,
         child_changed ? ", and under the child" : "");
  return changed || child_changed;
}

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "forkexec") == 0) return fork_exec_times(atoi(argv[2]));
  if (argc == 4 && strcmp(argv[1], "vsock") == 0) {
    return vsock_connect(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
  }
  if (argc == 2 && strcmp(argv[1], "xstate") == 0) return xstate_check();
  if (argc != 1) {
    fprintf(stderr, "usage: ember-usercheck [forkexec N | vsock CID PORT | xstate]\n");
    return 2;
  }
  check_exit_status();
  check_exec();
  check_pipe();
  check_signals();
  check_threads();
  check_mmap();
  check_time();
  check_files();
  printf("%s\n", failures ? "usercheck: FAILED" : "usercheck: all passed");
  return failures ? 1 : 0;
}
