// Ember's guest init: a static program with no libc.
//
// By default it prints a line to the console and asks the kernel to reboot,
// which ends the VMM with exit code 0. Booted with "ember_idle" on the kernel
// command line (the kernel passes unknown words to init as arguments), it
// makes no system call at all and loops, keeping the kernel alive and
// serving interrupts (on PVM hosts a guest kernel without the "pvmuser" boot
// option cannot take user-space system calls, shared/PLATFORM.md). Booted
// with "ember_shell" or "ember_demo", it does what it does by default up to
// the reboot and then execs Debian's busybox init, whose /etc/inittab
// (resources/rootfs/inittab) runs /etc/ember/shell.sh on the console: the
// marker protocol tests use to run commands (ember_shell), or a short demo
// that ends in a clean shutdown (ember_demo).
#include <fcntl.h>
#include <linux/reboot.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static long sys3(long nr, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return ret;
}

static long sys6(long nr, long a, long b, long c, long d, long e, long f) {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}

// Firecracker's boot timer protocol (ember --boot-timer): one byte, 123, at
// the device's MMIO address, written through /dev/mem. Without the device
// the write goes nowhere.
static void signal_boot_complete(void) {
  long fd = sys3(SYS_open, (long)"/dev/mem", O_RDWR | O_SYNC, 0);
  if (fd < 0) return;
  long page = sys6(SYS_mmap, 0, 4096, PROT_WRITE, MAP_SHARED, fd, 0xd0000000L);
  if (page < 0 && page > -4096) return;
  *(volatile unsigned char*)page = 123;
}

static int streq(const char* a, const char* b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

static const char kHello[] = "ember-init: hello from user space\n";

static const char kNoBusybox[] = "ember-init: cannot exec /bin/busybox init\n";

__attribute__((noreturn)) void start_c(long* sp) {
  long argc = sp[0];
  char** argv = (char**)(sp + 1);
  char** envp = argv + argc + 1;
  int busybox = 0;
  for (long i = 1; i < argc; i++) {
    if (streq(argv[i], "ember_idle")) {
      for (;;) __asm__ volatile("pause");
    }
    if (streq(argv[i], "ember_shell") || streq(argv[i], "ember_demo")) busybox = 1;
  }
  signal_boot_complete();
  sys3(SYS_write, 1, (long)kHello, sizeof(kHello) - 1);
  if (busybox) {
    static const char* const init_argv[] = {"init", 0};
    sys3(SYS_execve, (long)"/bin/busybox", (long)init_argv, (long)envp);
    sys3(SYS_write, 1, (long)kNoBusybox, sizeof(kNoBusybox) - 1);
  }
  sys3(SYS_sync, 0, 0, 0);
  for (;;) {
    long args[4] = {LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, 0};
    long ret;
    register long r10 __asm__("r10") = args[3];
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(SYS_reboot), "D"(args[0]), "S"(args[1]), "d"(args[2]), "r"(r10)
                     : "rcx", "r11", "memory");
  }
}

// The kernel enters with the stack pointer at argc.
__asm__(".globl _start\n_start:\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call start_c\n");
