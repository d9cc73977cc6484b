/* What a process sees from inside ember-jailer's jail, for test_jailer.py:
 * exec'd by the jailer in place of the VMM, it writes /report.json in the
 * jail. With --hold it then waits for /release, so that the test can look
 * at it from the host (/proc/PID/cgroup, ns/net). Static: the jail has no
 * libraries. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

extern char** environ;

int main(int argc, char** argv) {
  FILE* out = fopen("/report.json", "w");
  if (out == NULL) return 2;
  fprintf(out, "{\"pid\": %d, \"uid\": %d, \"euid\": %d, \"gid\": %d, \"egid\": %d,\n", getpid(),
          getuid(), geteuid(), getgid(), getegid());
  fprintf(out, " \"groups\": %d, \"sid_is_pid\": %s,\n", getgroups(0, NULL),
          getsid(0) == getpid() ? "true" : "false");
  int env = 0;
  for (char** e = environ; *e != NULL; e++) env++;
  fprintf(out, " \"environment\": %d,\n \"argv\": [", env);
  for (int i = 0; i < argc; i++) fprintf(out, "%s\"%s\"", i ? ", " : "", argv[i]);
  /* Open fds (the report's own excepted). */
  fprintf(out, "],\n \"fds\": [");
  int first = 1;
  for (int fd = 0; fd < 1024; fd++) {
    if (fd != fileno(out) && fcntl(fd, F_GETFD) != -1) {
      fprintf(out, "%s%d", first ? "" : ", ", fd);
      first = 0;
    }
  }
  fprintf(out, "],\n \"root\": [");
  DIR* d = opendir("/");
  first = 1;
  for (struct dirent* e; d != NULL && (e = readdir(d)) != NULL;) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    fprintf(out, "%s\"%s\"", first ? "" : ", ", e->d_name);
    first = 0;
  }
  if (d != NULL) closedir(d);
  /* Host paths given after --host-path: the errno of opening each. */
  fprintf(out, "],\n \"host_paths\": {");
  first = 1;
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--host-path") != 0) continue;
    int fd = open(argv[i + 1], O_RDONLY);
    fprintf(out, "%s\"%s\": %d", first ? "" : ", ", argv[i + 1], fd < 0 ? errno : 0);
    if (fd >= 0) close(fd);
    first = 0;
  }
  struct rlimit nofile, fsize;
  getrlimit(RLIMIT_NOFILE, &nofile);
  getrlimit(RLIMIT_FSIZE, &fsize);
  fprintf(out, "},\n \"nofile\": %lld, \"fsize\": %lld,\n", (long long)nofile.rlim_cur,
          (long long)fsize.rlim_cur);
  /* The limits hold: open until refused, write past fsize. */
  int opened = 0, last_errno = 0, fd;
  while ((fd = open("/", O_RDONLY)) >= 0) opened++;
  last_errno = errno;
  for (fd = 3; fd < 100000 && fd < 3 + opened + 1; fd++) {
    if (fd != fileno(out)) close(fd);
  }
  signal(SIGXFSZ, SIG_IGN);
  int big = open("/big", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  static char block[65536];
  long long written = 0;
  int write_errno = 0;
  while (big >= 0 && written < (1 << 20)) {
    ssize_t n = write(big, block, sizeof(block));
    if (n < 0) {
      write_errno = errno;
      break;
    }
    written += n;
  }
  fprintf(out, " \"opened_until_refused\": %d, \"open_errno\": %d,\n", opened, last_errno);
  fprintf(out, " \"written\": %lld, \"write_errno\": %d,\n", written, write_errno);
  if (big >= 0) close(big);
  unlink("/big");
  fprintf(out, " \"interfaces\": [");
  struct if_nameindex* ifs = if_nameindex();
  for (int i = 0; ifs != NULL && ifs[i].if_name != NULL; i++) {
    fprintf(out, "%s\"%s\"", i ? ", " : "", ifs[i].if_name);
  }
  fprintf(out, "]}\n");
  fclose(out);
  int hold = 0;
  for (int i = 1; i < argc; i++) hold |= strcmp(argv[i], "--hold") == 0;
  struct stat st;
  while (hold && stat("/release", &st) != 0) usleep(10000);
  return 0;
}
