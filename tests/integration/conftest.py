"""Fixtures for Ember's integration tests: the VMM binary, the guest
artifacts built by tools/devtool setup, and a helper that runs one microVM
from a config file and collects its console and log."""

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "build" / "guest"
# A Linux boot costs well over a minute of CPU on PVM hosts (PLATFORM.md).
BOOT_TIMEOUT_S = 600

EXIT_OK = 0
EXIT_BAD_SYSCALL = 148
EXIT_BAD_CONFIGURATION = 152
EXIT_ARG_PARSING = 153
EXIT_SIGTERM = 128 + 15

# Firecracker's answers, word for word.
NOT_SUPPORTED_BEFORE_START = (
    "The requested operation is not supported before starting the microVM.")
NOT_SUPPORTED_AFTER_START = (
    "The requested operation is not supported after starting the microVM.")


def pytest_addoption(parser):
    parser.addoption("--ember", default=str(ROOT / "build" / "ember"),
                     help="path of the ember binary")


@pytest.fixture(scope="session")
def ember(request):
    path = Path(request.config.getoption("--ember")).resolve()
    assert path.is_file(), f"{path} is missing: run tools/devtool setup"
    return path


# A machine without /dev/kvm (its kernel's kvm-pvm did not bind: a PVM
# guest not allowed to nest) can run no guest. As the unit tests that need
# KVM do there, a test that needs one is skipped, saying so: one that
# failed only because Ember or ember-jailer found no /dev/kvm, or that
# calls need_kvm(). Where /dev/kvm exists nothing changes.
NO_KVM = not os.path.exists("/dev/kvm")
NO_KVM_REASON = "no /dev/kvm on this machine: this test runs a guest"
KVM_MISSING = ("open /dev/kvm: No such file or directory",
               "the host's /dev/kvm: No such file or directory")


def need_kvm():
    if NO_KVM:
        pytest.skip(NO_KVM_REASON)


@pytest.fixture
def kvm():
    """For a test that boots a guest but would fail otherwise without KVM:
    @pytest.mark.usefixtures("kvm")."""
    need_kvm()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if NO_KVM and report.failed and any(m in str(report.longrepr) for m in KVM_MISSING):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {NO_KVM_REASON}")


@pytest.fixture(scope="session")
def guest():
    names = ["vmlinux", "bzImage", "initramfs.cpio", "rootfs.ext4"]
    paths = {n: GUEST / n for n in names}
    missing = [str(p) for p in paths.values() if not p.exists()]
    assert not missing, f"guest artifacts missing ({missing}): run tools/devtool setup"
    return paths


def is_pvm_host():
    return os.path.isdir("/sys/module/kvm_pvm")


class Run:
    """The outcome of one ember process."""

    def __init__(self, code, console, log, seconds):
        self.code = code
        self.console = console
        self.log = log
        self.seconds = seconds

    def __repr__(self):
        return (f"exit {self.code} after {self.seconds:.1f}s\n--- log ---\n{self.log}"
                f"\n--- console (last 3000 chars) ---\n{self.console[-3000:]}")


def run_ember(ember, workdir, config=None, args=None, timeout=BOOT_TIMEOUT_S):
    """Runs ember with `config` (a dict, written to workdir/vm.json) or raw
    `args`, and waits for it to exit."""
    cmd = [str(ember)]
    if config is not None:
        path = Path(workdir) / "vm.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        cmd += ["--no-api", "--config-file", str(path)]
    cmd += args or []
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout.decode(errors="replace"),
               proc.stderr.decode(errors="replace"), time.monotonic() - start)


class Microvm:
    """An ember process running in the background, console and log in files
    under `workdir`, so a test can wait for a line and then act."""

    def __init__(self, ember, workdir, config, prefix=(), args=()):
        self.workdir = Path(workdir)
        path = self.workdir / "vm.json"
        path.write_text(json.dumps(config))
        self.console_path = self.workdir / "console.out"
        self.log_path = self.workdir / "ember.log"
        with open(self.console_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*prefix, str(ember), "--no-api", "--config-file", str(path), *args],
                cwd=workdir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def console(self):
        return self.console_path.read_text(errors="replace")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_for_console(self, text, timeout=BOOT_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console():
                return True
            if self.proc.poll() is not None:
                return text in self.console()
            time.sleep(0.5)
        return False

    def wait_for_log(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.2)
        return False

    def wait(self, timeout=60):
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def microvms():
    """Starts Microvm processes and kills whatever is left at the end."""
    started = []

    def start(ember, workdir, config, prefix=(), args=()):
        vm = Microvm(ember, workdir, config, prefix, args)
        started.append(vm)
        return vm

    yield start
    for vm in started:
        vm.kill()


def small_channel(kind):
    """(read end, write end) of a pipe or Unix stream socket that holds
    about a page: handed to Ember as stdout or stderr and left unread, it
    is full after a few lines."""
    if kind == "pipe":
        r, w = os.pipe()
        fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ
        return r, w
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return ours.detach(), theirs.detach()


def http_request(sock, method, path, body=None, raw=None):
    """One request to the API on Unix socket `sock`, with curl as a
    Firecracker client would send it; returns (status, parsed JSON or None).
    Raises ConnectionError when nothing answers, TimeoutExpired when an
    answer takes minutes (a VMM thread held by something it waits on)."""
    cmd = ["curl", "-s", "--unix-socket", str(sock), "-X", method, "-w", "\n%{http_code}",
           f"http://localhost{path}"]
    if body is not None or raw is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary",
                raw if raw is not None else json.dumps(body)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    text, status = out.rsplit("\n", 1)
    if status == "000":
        raise ConnectionError(out)
    return int(status), (json.loads(text) if text else None)


def wait_for_api(sock, proc, timeout=10):
    """Waits until the API on `sock` answers GET /."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_request(sock, "GET", "/")
            return
        except (ConnectionError, FileNotFoundError, subprocess.CalledProcessError):
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise AssertionError(f"the API socket {sock} never answered")


def rss_kib(pid, mem_mib):
    """(guest memory's RSS, the rest's) of an Ember process, in KiB. Guest
    memory is the run of adjacent mappings as large as the guest's RAM: one
    anonymous mapping, split where the kernel's range got huge pages for its
    copy or is mapped from the kernel file (src/vmm/boot.h). None for the
    guest's where there is no such run (no VM yet). Hugetlbfs pages (2M
    guests), which smaps leaves out of Rss, count."""
    maps = []  # [start, end, rss KiB]
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            maps.append([lo, hi, 0])
        elif line.startswith(("Rss:", "Private_Hugetlb:", "Shared_Hugetlb:")):
            maps[-1][2] += int(line.split()[1])
    total = sum(m[2] for m in maps)
    for i in range(len(maps)):
        size = rss = 0
        for j in range(i, len(maps)):
            if j > i and maps[j][0] != maps[j - 1][1]:
                break
            size += maps[j][1] - maps[j][0]
            rss += maps[j][2]
            if size >= mem_mib << 20:
                break
        if size == mem_mib << 20:
            return rss, total - rss
    return None, total


def meminfo_value(key):
    """A field of the host's /proc/meminfo (kB, or pages for HugePages_*)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def huge_page_pool(mib):
    """At least `mib` MiB of free 2 MiB pages in the host's hugetlbfs pool
    while inside: the pool grows by the shortfall (root) and is set back.
    One user of the pool at a time, unit tests included (the lock file of
    src/common/testing/huge_page_pool.h), so that none shrinks it under
    another."""
    lock = open("/tmp/ember-test-hugepages.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    with lock:
        yield from _grown_pool(mib)


def unreserved_huge_pages():
    """Pages of the pool nobody holds or has reserved."""
    return meminfo_value("HugePages_Free") - meminfo_value("HugePages_Rsvd")


def _grown_pool(mib):
    nr = Path("/proc/sys/vm/nr_hugepages")
    before = int(nr.read_text())
    short = mib // 2 - unreserved_huge_pages()
    if short > 0:
        try:
            nr.write_text(str(before + short))
        except OSError as e:
            pytest.skip(f"the hugetlbfs pool cannot grow here ({e}): huge_pages 2M needs it")
    try:
        if unreserved_huge_pages() < mib // 2:
            pytest.skip(f"the host could not give its hugetlbfs pool {mib} MiB")
        yield
    finally:
        if short > 0:
            nr.write_text(str(before))


def guest_mappings(pid, mib):
    """smaps entries of an Ember process as large as `mib` MiB: dicts of
    their fields ("KernelPageSize", "Private_Hugetlb", "VmFlags", ...)."""
    found, current = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            current = {"size": hi - lo}
            if hi - lo == mib << 20:
                found.append(current)
        elif current is not None and ":" in line:
            key, value = line.split(":", 1)
            current[key] = value.strip()
    return found


def boot_config(kernel, initrd=None, vcpus=1, mem_mib=128,
                boot_args="console=ttyS0 reboot=k panic=1 pci=off"):
    boot = {"kernel_image_path": str(kernel), "boot_args": boot_args}
    if initrd:
        boot["initrd_path"] = str(initrd)
    return {"boot-source": boot,
            "machine-config": {"vcpu_count": vcpus, "mem_size_mib": mem_mib}}
