"""Firecracker's real clients, replayed against Ember installed as
`firecracker` with a real guest (booted to user space in the first two):

- Kata Containers' Firecracker driver (kata-containers
  src/runtime/virtcontainers/fc.go, its models in
  virtcontainers/pkg/firecracker/client/models and types/fcConfig.go): the
  version check on `<binary> --version`, the jail it prepares (bind mounts,
  FIFOs created with mode 0, placeholder drives), the jailer command line
  with --uid 0 --gid 0 --daemonize --netns and no --api-sock, its JSON
  config file, GET / until Running, the pid file, the hybrid vsock socket,
  and the PATCH /drives that swaps a placeholder for a bind-mounted image
  and back; then SIGTERM.
- The Firecracker Go SDK (firecracker-go-sdk machine.go, handlers.go,
  firecracker.go, drives.go, rate_limiter.go, kernelargs.go,
  client/models): the command line it builds, waitForSocket's GET
  /machine-config polling, the default handler list in order with the JSON
  encoding/json writes for its models (omitempty), its per-request
  timeouts, then the Machine methods a caller such as firecracker-containerd
  uses next (DescribeInstanceInfo, GetFirecrackerVersion, UpdateGuestDrive,
  UpdateGuestNetworkInterfaceRateLimit) and Shutdown.
- The metrics line as Kata's parser (virtcontainers/fc_metrics.go) reads
  it: every group and field it reads that Firecracker still writes on
  x86_64 (tests/host_tools/fcmetrics.py in Firecracker), as a uint64, on
  one line shorter than bufio.Scanner's 64 KiB; and Firecracker's counters
  count since the previous flush.

Requests go through a small HTTP/1.1 client that sends what Go's net/http
sends (one kept-alive connection, Host: localhost, JSON bodies) and returns
the status, the headers and the body, so headers such as Deprecation are
checked too."""

import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import BOOT_TIMEOUT_S, EXIT_OK
from guest_shell import SerialShell, shell_boot_args
from metrics_lines import KATA, is_uint64

# Kata's floor (fc.go: fcMinSupportedVersion).
KATA_MIN_FIRECRACKER = (0, 21, 1)
# bufio.Scanner's default limit: a longer line stops Kata's FIFO readers.
SCANNER_MAX_LINE = 64 * 1024
AGENT_PORT = 1024  # Kata's agent port (hypervisor.go vSockPort); ember-agent's too
GUEST_CID = 3
HOST_IP = "172.30.0.1"
GUEST_IP = "172.30.0.2"


# ---------------------------------------------------------------------------
# HTTP as Go's net/http sends it, over a Unix socket.

class Answer:
    def __init__(self, status, headers, body, seconds):
        self.status = status
        self.headers = headers  # header name in lower case -> value
        self.raw = body
        self.json = json.loads(body) if body else None
        self.seconds = seconds

    def __repr__(self):
        return f"{self.status} {self.headers} {self.raw[:500]!r} in {self.seconds:.3f}s"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class GoClient:
    """One kept-alive connection, as Go's http.Transport keeps one per host:
    a new one after an answer with Connection: close, or once the server has
    closed the idle one (Transport's read loop sees the EOF)."""

    def __init__(self, sock, timeout=30):
        self.conn = _UnixHTTPConnection(sock, timeout)

    def _drop_if_closed(self):
        sock = self.conn.sock
        if sock is None or not select.select([sock], [], [], 0)[0]:
            return
        try:
            closed = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except OSError:
            closed = True
        if closed:
            self.conn.close()

    def call(self, method, path, body=None):
        self._drop_if_closed()
        headers = {"User-Agent": "Go-http-client/1.1", "Accept": "application/json",
                   "Accept-Encoding": "gzip"}
        data = None
        if body is not None:
            # encoding/json: compact, fields in the struct's order.
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        start = time.monotonic()
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        seconds = time.monotonic() - start
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw, seconds)

    def close(self):
        self.conn.close()


def expect_no_content(answer, within=None, deprecated=False):
    """Firecracker's answer to a request that succeeds with nothing to say:
    204, no body; `within` is the client's timeout for it; `deprecated`: a
    Deprecation header (Firecracker's micro_http writes "Deprecation: true")."""
    assert answer.status == 204 and answer.raw == b"", answer
    if within is not None:
        assert answer.seconds < within, f"the client gives up after {within}s: {answer}"
    if deprecated:
        assert answer.headers.get("deprecation") == "true", answer
    else:
        assert "deprecation" not in answer.headers, answer


def expect_json(answer):
    assert answer.status == 200, answer
    assert answer.headers.get("content-type") == "application/json", answer
    return answer.json


def semver(text):
    """(major, minor, patch) of a semantic version, as blang/semver's Make
    accepts it (pre-release and build allowed), or None."""
    m = re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", text)
    return tuple(int(x) for x in m.groups()[:3]) if m else None


# ---------------------------------------------------------------------------
# The models the clients serialize, field for field in their Go struct's
# order. A pointer field left nil and an omitempty field left empty are not
# written; a pointer to false or 0 is.

def _go(*fields):
    return {name: value for name, value in fields if value is not None}


def boot_source(kernel, boot_args=None, initrd=None):
    return _go(("boot_args", boot_args), ("initrd_path", initrd), ("kernel_image_path", kernel))


def drive(drive_id, path, read_only, root, rate_limiter=None):
    return _go(("drive_id", drive_id), ("is_read_only", read_only), ("is_root_device", root),
               ("path_on_host", path), ("rate_limiter", rate_limiter))


def partial_drive(drive_id, path):
    return _go(("drive_id", drive_id), ("path_on_host", path))


def machine_config(vcpus, mem_mib, smt=None, cpu_template=None):
    return _go(("cpu_template", cpu_template), ("mem_size_mib", mem_mib), ("smt", smt),
               ("vcpu_count", vcpus))


def token_bucket(size, refill_time, one_time_burst=None):
    return _go(("one_time_burst", one_time_burst), ("refill_time", refill_time), ("size", size))


def rate_limiter(bandwidth=None, ops=None):
    return _go(("bandwidth", bandwidth), ("ops", ops))


def network_interface(iface_id, host_dev, mac=None, rx=None, tx=None):
    return _go(("guest_mac", mac), ("host_dev_name", host_dev), ("iface_id", iface_id),
               ("rx_rate_limiter", rx), ("tx_rate_limiter", tx))


def vsock(cid, uds_path, vsock_id=None):
    return _go(("guest_cid", cid), ("uds_path", uds_path), ("vsock_id", vsock_id))


def logger(log_path, level=None, show_level=None, show_log_origin=None):
    return _go(("level", level), ("log_path", log_path), ("show_level", show_level),
               ("show_log_origin", show_log_origin))


# ---------------------------------------------------------------------------
# Host plumbing: FIFO readers, a network namespace with a TAP, bind mounts,
# processes that are not our children.

class FifoLines:
    """Reads a FIFO as Kata and the Go SDK do: opened O_RDONLY|O_NONBLOCK
    before the VMM writes to it, read line by line (bufio.Scanner) on a
    thread. `lines` holds what came; `too_long` any line past the
    scanner's limit."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.lines, self.too_long = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        pending = b""
        while not self._stop.is_set():
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                chunk = None
            if not chunk:  # nothing yet, or no writer (yet)
                time.sleep(0.05)
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                (self.too_long if len(line) > SCANNER_MAX_LINE else self.lines).append(
                    line.decode(errors="replace"))

    def wait_for_lines(self, count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.lines) >= count

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.fd)


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def new_netns(tap, host_ip=None):
    """A network namespace with loopback up and the TAP `tap` in it (with
    `host_ip`/24 on it, up, when given); the caller deletes it."""
    name = f"ember-cl-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    ns = ("ip", "netns", "exec", name)
    sh(*ns, "ip", "link", "set", "lo", "up")
    sh(*ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
    if host_ip:
        sh(*ns, "ip", "addr", "add", f"{host_ip}/24", "dev", tap)
        sh(*ns, "ip", "link", "set", tap, "up")
    return name


class Mounts:
    """Bind mounts made as Kata makes them (virtcontainers/mount_linux.go
    bindMount: MS_BIND, then the propagation type), undone in reverse."""

    def __init__(self):
        self.points = []

    def bind(self, source, target, propagation):
        target = Path(target)
        if not target.exists():
            (target.mkdir if Path(source).is_dir() else target.touch)()
        sh("mount", "--bind", str(source), str(target))
        self.points.append(target)
        sh("mount", f"--make-{propagation}", str(target))

    def unmount(self, target):
        """umountResource: MNT_DETACH (the VMM may hold the file open)."""
        sh("umount", "-l", str(target))
        self.points.remove(Path(target))

    def undo(self):
        for target in reversed(self.points):
            sh("umount", "-l", str(target), check=False)
        self.points = []


def process_gone(pid):
    """True once `pid` has exited (a zombie nobody reaps counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


def wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_running(binary):
    """Kills what still runs `binary`: a VMM whose client was killed lives on."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/exe") == str(binary):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def guest_exec(ember, uds, script, timeout=120):
    """Runs `script` in the guest through its agent over the hybrid vsock
    socket `uds` (CONNECT <port>, as Kata and firecracker-containerd reach
    their agents): (exit status, stdout, stderr)."""
    proc = subprocess.run([str(Path(ember).parent / "ember-exec"), "--uds", str(uds),
                           "--port", str(AGENT_PORT), "--", "sh", "-c", script],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return (proc.returncode, proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"))


def guest_check(ember, uds, script):
    status, out, err = guest_exec(ember, uds, script)
    assert status == 0, (script, status, out, err)
    return out


def wait_for_agent(ember, uds, alive, timeout=BOOT_TIMEOUT_S):
    """Waits until the guest agent runs a command (the guest has booted to
    user space); `alive()` says whether the VMM still runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, out, err = guest_exec(ember, uds, "echo up", timeout=30)
        except subprocess.TimeoutExpired:  # a connection the guest has yet to take
            status, out, err = None, "", "no answer within 30 s"
        if status == 0 and out == "up\n":
            return
        assert alive(), f"the VMM exited before its guest answered: {err}"
        assert time.monotonic() < deadline, f"no answer from the guest agent: {err}"
        time.sleep(2)


def wait_until(probe, want, timeout=120):
    """Polls `probe()` until it returns `want`; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(1)


def partitioned_image(ext4, out):
    """A disk as Kata's guest images are: an MBR with one Linux partition
    (type 0x83) from sector 2048 holding `ext4`, so that the kernel's
    root=/dev/vda1 finds it."""
    data = Path(ext4).read_bytes()
    start, sectors = 2048, len(data) // 512
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                               start, sectors)
    mbr[510:512] = b"\x55\xaa"
    with open(out, "wb") as f:
        f.write(mbr)
        f.seek(start * 512)
        f.write(data)
    return out


def image_with_marker(path, size, marker):
    with open(path, "wb") as f:
        f.write(marker)
        f.truncate(size)
    return path


# ---------------------------------------------------------------------------
# Kata Containers' Firecracker driver.

def kata_version_check(binary):
    """fc.go getVersionNumber/parseVersion/checkVersion: the first line of
    `<hypervisor> --version`, its second space-separated field without a
    leading "v", a semantic version no lower than 0.21.1."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out
    fields = out.stdout.split("\n")[0].split(" ")
    assert len(fields) > 1, f"Kata: the output is malformed: {out.stdout!r}"
    version = fields[1].strip().removeprefix("v")
    parsed = semver(version)
    assert parsed is not None, f"Kata: malformed firecracker version {version!r}"
    assert parsed >= KATA_MIN_FIRECRACKER, \
        f"Kata refuses version {version} (minimum 0.21.1), from {out.stdout!r}"


def kata_config(kernel, boot_args, rootfs, placeholders, log_fifo, metrics_fifo, hvsock,
                endpoint=None, mem_mib=256, vcpus=1):
    """types.FcConfig as fc.go fills it in StartVM (fcSetVMBaseConfig,
    fcSetBootSource, fcSetVMRootfs, createDiskPool, fcSetLogger,
    fcSetMetrics, then the queued devices: fcAddNetDevice for `endpoint`
    (TAP name, MAC) with rate limiting off, so both limiters are empty
    structs, and fcAddVsock), fields in FcConfig's order, the omitempty
    ones left out when empty."""
    return _go(
        ("boot-source", boot_source(kernel, boot_args)),
        ("machine-config", machine_config(vcpus, mem_mib, smt=False)),
        ("vsock", vsock(GUEST_CID, hvsock, vsock_id="root")),
        ("logger", logger(log_fifo, level="Debug")),
        ("metrics", {"metrics_path": metrics_fifo}),
        ("drives", [drive("rootfs", rootfs, True, False)] +
                   [drive(f"drive_{i}", p, False, False) for i, p in enumerate(placeholders)]),
        ("network-interfaces", [network_interface("eth0", endpoint[0], endpoint[1], rx={}, tx={})]
         if endpoint else None))


def kata_boot_args(user_params):
    """fcInitConfiguration: the configured kernel_params, then
    GetKernelRootParams(ext4, virtio-blk), fcKernelParams, and console=ttyS0
    (debug on)."""
    return " ".join([user_params,
                     "root=/dev/vda1", "rootflags=data=ordered,errors=remount-ro ro",
                     "rootfstype=ext4", "pci=off", "reboot=k", "panic=1", "iommu=off",
                     "net.ifnames=0", "random.trust_cpu=on", "acpi=off", "console=ttyS0"])


def kata_wait_vmm_running(sock, timeout=10):
    """fc.go waitVMMRunning: GET / every 10 ms until state is Running;
    errors (no socket yet) are retried; gives up after `timeout` s."""
    start = time.monotonic()
    last = None
    while True:
        try:
            client = GoClient(sock, timeout=5)
            try:
                answer = client.call("GET", "/")
            finally:
                client.close()
            last = answer
            if answer.status == 200 and isinstance(answer.json, dict) and \
                    answer.json.get("state") == "Running":
                return answer
        except (OSError, http.client.HTTPException) as e:
            last = e
        assert int(time.monotonic() - start) <= timeout, \
            f"Kata: Failed to connect to firecracker instance (timeout {timeout}s): {last}"
        time.sleep(0.01)


def test_kata_jailed_firecracker_driver(ember, guest):
    ember = Path(ember)
    # A short base: the API socket's path in the jail must fit 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="kata-", dir="/tmp"))
    fc = base / "bin" / "firecracker"  # hypervisor path
    sandbox = uuid.uuid4().hex  # truncateID: 32 characters
    vm_path = base / "firecracker" / sandbox  # <chroot base>/<exec name>/<id>
    root = vm_path / "root"
    mounts, readers = Mounts(), []
    netns = new_netns("tap0_kata")
    vmm_pid = None
    try:
        fc.parent.mkdir()
        shutil.copy(ember, fc)
        # fcInitConfiguration: <root>/run, then the root bound on itself
        # and made shared (fcRemountJailerRootWithExec; its remount, which
        # only drops noexec, is left out: /tmp is not noexec).
        (root / "run").mkdir(parents=True)
        mounts.bind(root, root, "shared")
        mounts.bind(guest["vmlinux"], root / "vmlinux", "slave")
        image = partitioned_image(guest["rootfs.ext4"], base / "kata-containers.img")
        mounts.bind(image, root / "rootfs", "slave")
        placeholders = []
        for i in range(8):  # createDiskPool: empty files in the jail
            (root / f"drive_{i}").touch()
            placeholders.append(f"/drive_{i}")
        # fcListenToFifo: created with mode 0 and opened for reading
        # outside the jail, bound into it.
        for name in ("logs.fifo", "metrics.fifo"):
            os.mkfifo(vm_path / name, 0)
            readers.append(FifoLines(vm_path / name))
            mounts.bind(vm_path / name, root / name, "slave")
        log_lines, metrics_lines = readers
        mac = "02:42:ac:11:00:02"
        config = kata_config("/vmlinux", kata_boot_args("ember_shell"), "/rootfs", placeholders,
                             "/logs.fifo", "/metrics.fifo", "/kata.hvsock", ("tap0_kata", mac))
        (vm_path / "fcConfig.json").write_text(json.dumps(config, indent="\t"))
        os.chmod(vm_path / "fcConfig.json", 0o640)
        mounts.bind(vm_path / "fcConfig.json", root / "fcConfig.json", "slave")

        # fcInit: the version check, then the jailer.
        kata_version_check(fc)
        jailer = subprocess.Popen(
            [str(ember.parent / "ember-jailer"), "--id", sandbox, "--exec-file", str(fc),
             "--uid", "0", "--gid", "0", "--chroot-base-dir", str(base), "--daemonize",
             "--netns", f"/var/run/netns/{netns}", "--", "--config-file", "/fcConfig.json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        sock = root / "run" / "firecracker.socket"
        try:
            info = kata_wait_vmm_running(sock)
        except AssertionError:
            out, err = jailer.communicate(timeout=30)
            raise AssertionError(f"jailer exited {jailer.returncode}: {err}\n{log_lines.lines}")
        # DescribeInstance's InstanceInfo: all four fields are required.
        assert info.headers.get("content-type") == "application/json", info
        for field in ("app_name", "id", "state", "vmm_version"):
            assert isinstance(info.json.get(field), str), info
        assert info.json["id"] == sandbox, info
        assert jailer.wait(timeout=30) == 0, jailer.stderr.read()

        # readJailedFirecrackerPID, retried for 5 s.
        deadline = time.monotonic() + 5
        while True:
            try:
                vmm_pid = int((root / "firecracker.pid").read_text().strip())
                break
            except (FileNotFoundError, ValueError):
                assert time.monotonic() < deadline, sorted(p.name for p in root.iterdir())
                time.sleep(0.05)
        assert vmm_pid > 0
        assert os.readlink(f"/proc/{vmm_pid}/exe") == "/firecracker", "the pid is the VMM's"
        # StartVM: the hybrid vsock socket exists once the VMM runs.
        os.chmod(root / "kata.hvsock", 0o640)

        # The agent answers over the hybrid vsock: the guest is up.
        hvsock = root / "kata.hvsock"
        wait_for_agent(ember, hvsock, lambda: not process_gone(vmm_pid))
        # Few programs per check: a fork and exec cost about a second here.
        cmdline, partition, address, *sizes = guest_check(
            ember, hvsock, "cat /proc/cmdline /sys/block/vda/vda1/size "
            "/sys/class/net/eth0/address /sys/block/vd[b-i]/size").splitlines()
        assert "root=/dev/vda1" in cmdline.split(), cmdline
        assert partition == str(guest["rootfs.ext4"].stat().st_size // 512), "root on vda1"
        assert address == mac
        assert sizes == ["0"] * 8, f"eight empty placeholders: {sizes}"

        # hotplugBlockDevice(AddDevice): the container's image bound over
        # the placeholder, then PATCH with the same jailed path.
        client = GoClient(sock)
        marker = b"kata-hotplug-ok\n"
        disk = image_with_marker(base / "container.img", 4 << 20, marker)
        mounts.bind(disk, root / "drive_0", "slave")
        expect_no_content(client.call("PATCH", "/drives/drive_0",
                                      partial_drive("drive_0", "/drive_0")))
        got = wait_until(lambda: guest_check(
            ember, hvsock, f"cat /sys/block/vdb/size; head -c {len(marker)} /dev/vdb"),
            f"8192\n{marker.decode()}")
        assert got == f"8192\n{marker.decode()}", "the guest sees the container's image"
        # hotplugBlockDevice(RemoveDevice): unmounted, PATCHed back.
        mounts.unmount(root / "drive_0")
        expect_no_content(client.call("PATCH", "/drives/drive_0",
                                      partial_drive("drive_0", "/drive_0")))
        got = wait_until(lambda: guest_check(ember, hvsock, "cat /sys/block/vdb/size"), "0\n")
        assert got == "0\n", "the placeholder is back"
        client.close()

        # The periodic metrics flush (every 60 s) reaches Kata's reader,
        # and its json.Unmarshal takes each line (the fields themselves:
        # test_metrics_line_has_what_katas_parser_reads).
        left = 75 - (time.monotonic() - started)
        assert metrics_lines.wait_for_lines(1, max(left, 1)), "no metrics line within 75 s"
        assert not metrics_lines.too_long and not log_lines.too_long
        for line in metrics_lines.lines:
            problems = kata_metrics_problems(line, missing_too=False)
            assert not problems, problems
        assert log_lines.lines, "the Debug log reaches Kata's FIFO reader"

        # fcEnd: SIGTERM, then up to 15 s for the VMM to go.
        os.kill(vmm_pid, signal.SIGTERM)
        assert wait_gone(vmm_pid, 15), "the VMM outlived fcStopSandboxTimeout after SIGTERM"
    finally:
        if vmm_pid is None and (root / "firecracker.pid").exists():
            vmm_pid = int((root / "firecracker.pid").read_text().strip() or 0) or None
        if vmm_pid and not process_gone(vmm_pid):
            os.kill(vmm_pid, signal.SIGKILL)
            wait_gone(vmm_pid, 10)
        for r in readers:
            r.close()
        mounts.undo()
        sh("ip", "netns", "del", netns, check=False)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# The Firecracker Go SDK.

# firecracker.go: defaultFirecrackerRequestTimeout (500 ms) for most PUTs,
# half of it for PUT /drives; waitForSocket's 3 s
# (defaultFirecrackerInitTimeoutSeconds).
SDK_REQUEST_TIMEOUT_S = 0.5
SDK_DRIVE_TIMEOUT_S = 0.25
SDK_INIT_TIMEOUT_S = 3
# The environment of the SDK's real code (test_firectl.py, test_go_sdk.py):
# its default timeouts (500 ms a request, 250 ms a drive, 3 s for the
# socket), but under tools/emulated-kvm's emulated CPU, where the Go side
# alone takes longer, widened through the SDK's own variables. The replay
# below holds Ember's answers to the defaults there too.
SDK_ENV = dict(os.environ)
if os.environ.get("EMBER_EMULATED_CPU"):
    SDK_ENV.update({"FIRECRACKER_GO_SDK_REQUEST_TIMEOUT_MILLISECONDS": "20000",
                    "FIRECRACKER_GO_SDK_INIT_TIMEOUT_SECONDS": "60"})


def sdk_kernel_args(raw, rng):
    """setupKernelArgs: parsed into a map and joined back; Go's map order is
    random, so the words come in any order."""
    words = raw.split()
    rng.shuffle(words)
    return " ".join(words)


def test_go_sdk_default_handlers(ember, guest, tmp_path):
    rng = random.Random(15)
    fc = tmp_path / "firecracker"
    shutil.copy(ember, fc)
    sock = tmp_path / "firecracker.sock"
    vmid = str(uuid.uuid4())  # NewMachine: a random UUID when VMID is unset
    root_img = tmp_path / "rootfs.ext4"
    shutil.copy(guest["rootfs.ext4"], root_img)
    ro_img = image_with_marker(tmp_path / "ro.img", 1 << 20, b"sdk-read-only\n")
    rw_img = image_with_marker(tmp_path / "rw.img", 2 << 20, b"sdk-rate-limited\n")
    swap_img = image_with_marker(tmp_path / "swap.img", 3 << 20, b"sdk-swapped\n")
    uds = tmp_path / "v.sock"
    mac = "AA:FC:00:00:00:01"
    netns = new_netns("tap0", HOST_IP)
    # ExampleNetworkInterface_rateLimiting and ExampleDrivesBuilder_driveOpt.
    inbound = rate_limiter(token_bucket(1024 * 1024, 30000, 1024 * 1024),
                           token_bucket(5, 5000, 5))
    outbound = rate_limiter(token_bucket(10 * 1024 * 1024, 30000, 1024 * 1024),
                            token_bucket(100, 5000, 100))
    drive_limiter = rate_limiter(token_bucket(1024 * 1024, 500, 1024 * 1024))
    log_reader = None
    shell = None
    client = None
    try:
        # StartVMMHandler: configureBuilder (--api-sock, --id, and
        # --no-seccomp since Seccomp.Enabled is false), started in NetNS.
        shell = SerialShell(["ip", "netns", "exec", netns, str(fc), "--api-sock", str(sock),
                             "--id", vmid, "--no-seccomp"], tmp_path, "firecracker.log")
        # waitForSocket: every 10 ms, stat the socket and GET /machine-config.
        client = GoClient(sock)
        start = time.monotonic()
        while True:
            assert time.monotonic() - start < SDK_INIT_TIMEOUT_S, \
                f"Firecracker did not create API socket {sock}: {shell.log()}"
            if sock.exists():
                try:
                    first = client.call("GET", "/machine-config")
                    if first.status == 200:
                        break
                except (OSError, http.client.HTTPException):
                    client.close()
                    client = GoClient(sock)
            time.sleep(0.01)
        defaults = expect_json(first)
        assert all(isinstance(defaults.get(k), int) for k in ("vcpu_count", "mem_size_mib")), \
            defaults

        # CreateLogFilesHandler: both FIFOs (0700); the log one is read
        # (FifoLogWriter), the metrics one never.
        log_fifo, metrics_fifo = tmp_path / "log.fifo", tmp_path / "metrics.fifo"
        os.mkfifo(metrics_fifo, 0o700)
        os.mkfifo(log_fifo, 0o700)
        log_reader = FifoLines(log_fifo)

        # BootstrapLoggingHandler.
        expect_no_content(client.call("PUT", "/logger", logger(
            str(log_fifo), level="Debug", show_level=True, show_log_origin=False)),
            SDK_REQUEST_TIMEOUT_S)
        expect_no_content(client.call("PUT", "/metrics", {"metrics_path": str(metrics_fifo)}),
                          SDK_REQUEST_TIMEOUT_S)
        # CreateMachineHandler, then refreshMachineConfiguration. "None" is
        # the cpu_template every host takes; Firecracker marks the field
        # deprecated.
        expect_no_content(client.call("PUT", "/machine-config", machine_config(
            1, 256, smt=False, cpu_template="None")), SDK_REQUEST_TIMEOUT_S, deprecated=True)
        got = expect_json(client.call("GET", "/machine-config"))
        assert (got["vcpu_count"], got["mem_size_mib"], got["smt"]) == (1, 256, False), got
        # CreateBootSourceHandler, after SetupKernelArgsHandler added ip=
        # for the static IP configuration (vmconf IPBootParam).
        args = sdk_kernel_args(shell_boot_args() + f" ip={GUEST_IP}::{HOST_IP}:255.255.255.0"
                               "::eth0:off:::", rng)
        expect_no_content(client.call("PUT", "/boot-source", boot_source(
            str(guest["vmlinux"]), args)), SDK_REQUEST_TIMEOUT_S)
        # AttachDrivesHandler: DrivesBuilder puts the root drive last.
        for d in (drive("0", str(ro_img), True, False),
                  drive("1", str(rw_img), False, False, drive_limiter),
                  drive("root_drive", str(root_img), False, True)):
            expect_no_content(client.call("PUT", f"/drives/{d['drive_id']}", d),
                              SDK_DRIVE_TIMEOUT_S)
        # CreateNetworkInterfacesHandler: ids count from 1.
        expect_no_content(client.call("PUT", "/network-interfaces/1", network_interface(
            "1", "tap0", mac, rx=inbound, tx=outbound)), SDK_REQUEST_TIMEOUT_S)
        # AddVsocksHandler: the deprecated vsock_id is still sent.
        expect_no_content(client.call("PUT", "/vsock", vsock(GUEST_CID, str(uds), "root")),
                          deprecated=True)
        # ConfigMmdsHandler: no interface allows MMDS, nothing sent.
        # Start: startInstance.
        expect_no_content(client.call("PUT", "/actions", {"action_type": "InstanceStart"}))

        # Machine.DescribeInstanceInfo and GetFirecrackerVersion.
        info = expect_json(client.call("GET", "/"))
        assert (info["id"], info["state"]) == (vmid, "Running"), info
        assert isinstance(info["app_name"], str) and isinstance(info["vmm_version"], str), info
        version = expect_json(client.call("GET", "/version"))["firecracker_version"]
        assert semver(version), version

        shell.wait_ready()
        # Firecracker puts the root device first (vda) and adds root=/dev/vda;
        # the others follow in the order they were PUT. Few programs per
        # check: a fork and exec cost about a second here.
        assert shell.check(
            "cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vdb/ro /sys/block/vdc/size "
            "/sys/block/vdc/ro /sys/class/net/eth0/address; head -c 14 /dev/vdb; "
            "head -c 17 /dev/vdc").splitlines() == [
                str(root_img.stat().st_size // 512), "2048", "1", "4096", "0", mac.lower(),
                "sdk-read-only", "sdk-rate-limited"]
        out = shell.check(f"ping -c 3 -W 5 {HOST_IP}")
        assert "3 packets received" in out, out
        status, out, err = guest_exec(ember, uds, "cat /proc/sys/kernel/hostname")
        assert (status, out) == (0, "ember\n"), err

        # UpdateGuestDrive: the new file, and the guest sees its size.
        expect_no_content(client.call("PATCH", "/drives/1", partial_drive("1", str(swap_img))))
        got = wait_until(lambda: shell.check("cat /sys/block/vdc/size; head -c 12 /dev/vdc"),
                         "6144\nsdk-swapped\n")
        assert got == "6144\nsdk-swapped\n", "the guest sees the swapped image"
        # UpdateGuestNetworkInterfaceRateLimit (which sends the inbound
        # limiter for both directions).
        expect_no_content(client.call("PATCH", "/network-interfaces/1", _go(
            ("iface_id", "1"), ("rx_rate_limiter", inbound), ("tx_rate_limiter", inbound))),
            SDK_REQUEST_TIMEOUT_S)
        out = shell.check(f"ping -c 1 -W 5 {HOST_IP}")
        assert "1 packets received" in out, out

        # Shutdown: SendCtrlAltDel; the guest reboots and the VMM exits 0.
        expect_no_content(client.call("PUT", "/actions", {"action_type": "SendCtrlAltDel"}))
        client.close()
        assert shell.proc.wait(timeout=180) == EXIT_OK, shell.log()
        assert log_reader.lines, "the log reaches the SDK's FIFO reader"
        assert not log_reader.too_long
    finally:
        if client:
            client.close()
        if shell:
            shell.close()
        if log_reader:
            log_reader.close()
        sh("ip", "netns", "del", netns, check=False)


# ---------------------------------------------------------------------------
# The metrics line as Kata's parser reads it.

# fc_metrics.go FirecrackerMetrics: every group and field Kata reads, with
# the aarch64-only RTC.
KATA_METRICS = {**KATA, "rtc": ["error_count", "missed_read_count", "missed_write_count"]}
# Read by Kata but no longer written by Firecracker on x86_64
# (tests/host_tools/fcmetrics.py): Kata reads 0 when they are absent.
NOT_WRITTEN_BY_FIRECRACKER = {
    ("api_server", "sync_response_fails"), ("api_server", "sync_vmm_send_timeout_count"),
    ("get_api_requests", "instance_info_fails"), ("get_api_requests", "machine_cfg_fails"),
    ("logger", "log_fails"), ("net", "mac_address_updates"), ("net", "rx_partial_writes"),
    ("net", "tx_partial_reads"), ("vcpu", "filter_cpuid"), ("vmm", "device_events"),
}
NOT_WRITTEN_ON_X86 = {"rtc"}  # Firecracker's RTC (and its group) is aarch64's


def kata_metrics_problems(line, missing_too=True):
    """What makes Kata's updateMetrics fail (its bufio.Scanner or its
    json.Unmarshal into FirecrackerMetrics): a line past 64 KiB, a line
    that is not one JSON object, a group that is not an object, a field
    that is not a uint64; with `missing_too`, also what Kata reads and
    Firecracker writes but the line lacks (Kata would read 0). Returns a
    list of problems, empty when none."""
    problems = []
    if len(line) > SCANNER_MAX_LINE:
        problems.append(f"line of {len(line)} bytes: bufio.Scanner stops at 64 KiB")
    try:
        metrics = json.loads(line)
    except json.JSONDecodeError as e:
        return problems + [f"not JSON: {e}"]
    if not isinstance(metrics, dict):
        return problems + ["not a JSON object"]
    for group, fields in KATA_METRICS.items():
        values = metrics.get(group)
        if values is None:
            if missing_too and group not in NOT_WRITTEN_ON_X86:
                problems.append(f"group {group} missing")
            continue
        if not isinstance(values, dict):
            problems.append(f"group {group} is {type(values).__name__}, not an object")
            continue
        for field in fields:
            if field not in values:
                if missing_too and (group, field) not in NOT_WRITTEN_BY_FIRECRACKER and \
                        group not in NOT_WRITTEN_ON_X86:
                    problems.append(f"{group}.{field} missing")
            elif not is_uint64(values[field]):
                problems.append(f"{group}.{field} is {values[field]!r}, not a uint64")
    return problems


def kata_unjailed_vmm(ember, guest, workdir):
    """fc.go fcInit without a jailer: `<hypervisor> --api-sock <sock>
    --config-file <file>`, the config as Kata writes it, its metrics FIFO
    (mode 0) read as Kata reads it. The guest's boot starts at once;
    nothing here waits for it. Returns (process, socket, metrics reader)."""
    fc = workdir / "firecracker"
    shutil.copy(ember, fc)
    placeholders = []
    for i in range(8):
        (workdir / f"drive_{i}").touch()
        placeholders.append(str(workdir / f"drive_{i}"))
    for name in ("logs.fifo", "metrics.fifo"):
        os.mkfifo(workdir / name, 0)
    logs, metrics = FifoLines(workdir / "logs.fifo"), FifoLines(workdir / "metrics.fifo")
    image = partitioned_image(guest["rootfs.ext4"], workdir / "kata-containers.img")
    # No network endpoint: no TAP needed here.
    config = kata_config(str(guest["vmlinux"]), kata_boot_args("ember_idle"), str(image),
                         placeholders, str(workdir / "logs.fifo"), str(workdir / "metrics.fifo"),
                         str(workdir / "kata.hvsock"))
    (workdir / "fcConfig.json").write_text(json.dumps(config, indent="\t"))
    sock = workdir / "firecracker.socket"
    with open(workdir / "console.out", "wb") as out, \
            open(workdir / "firecracker.log", "wb") as err:
        proc = subprocess.Popen([str(fc), "--api-sock", str(sock), "--config-file",
                                 str(workdir / "fcConfig.json")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return proc, sock, metrics, logs


def flushed_lines(ember, guest, workdir, flushes, gets_between=0):
    """Starts the unjailed Kata VMM, waits for Running, sends `flushes`
    FlushMetrics with `gets_between` GET / between two, and returns the
    metrics lines Kata's reader got (Firecracker writes one more when the
    microVM starts: the process start-up times)."""
    proc, sock, metrics, logs = kata_unjailed_vmm(ember, guest, workdir)
    try:
        kata_wait_vmm_running(sock)
        time.sleep(0.5)  # the start-up line, written before GET / is answered, read
        before = len(metrics.lines)
        client = GoClient(sock)
        try:
            for i in range(flushes):
                if i:
                    for _ in range(gets_between):
                        expect_json(client.call("GET", "/"))
                expect_no_content(client.call("PUT", "/actions", {"action_type": "FlushMetrics"}))
        finally:
            client.close()
        assert metrics.wait_for_lines(before + flushes, 30), \
            (metrics.lines, (workdir / "firecracker.log").read_text())
        assert not metrics.too_long, [len(l) for l in metrics.too_long]
        return metrics.lines[before:before + flushes]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        metrics.close()
        logs.close()


@pytest.mark.usefixtures("kvm")
def test_metrics_line_has_what_katas_parser_reads(ember, guest, tmp_path):
    line, = flushed_lines(ember, guest, tmp_path, 1)
    problems = kata_metrics_problems(line)
    assert not problems, f"{len(problems)} problems: {problems}\nline: {line}"


@pytest.mark.usefixtures("kvm")
def test_metrics_counters_count_since_the_last_flush(ember, guest, tmp_path):
    """Firecracker's counters (SharedIncMetric) write what happened since
    the previous line; Kata sets its gauges from them. Two flushes with two
    GET / between them: each line counts one PUT /actions (its own), the
    second two GET /."""
    lines = flushed_lines(ember, guest, tmp_path, 2, gets_between=2)
    first, second = (json.loads(line) for line in lines)
    put = [line.get("put_api_requests", {}).get("actions_count") for line in (first, second)]
    get = second.get("get_api_requests", {}).get("instance_info_count")
    assert put == [1, 1], f"put_api_requests.actions_count per line: {put}"
    assert get == 2, f"get_api_requests.instance_info_count in the second line: {get}"
