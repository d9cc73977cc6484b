"""The API thread under its real seccomp filter (issue 12): the largest
bodies it accepts, at the default limit and at the highest one
--http-api-max-payload-size takes; JSON nested without bound, in an API
body, a --config-file and a snapshot's state file; more connections than it
serves at once; running out of file descriptors. After each, the VMM and its
guest carry on, and SIGTERM still ends it with 143.

One guest serves every check (a boot costs a minute or more here); if a
check kills it, the next check boots another, so that each failure is its
own."""

import json
import os
import resource
import signal
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from conftest import (BOOT_TIMEOUT_S, EXIT_BAD_CONFIGURATION, EXIT_SIGTERM, run_ember,
                      small_channel, wait_for_api)

IDLE_ARGS = "console=ttyS0 reboot=k panic=1 pci=off ember_idle"
DEFAULT_LIMIT = 51200          # api/http_server.h kDefaultMaxBody
HIGHEST_LIMIT = 64 << 20       # the most --http-api-max-payload-size takes
MAX_CONNECTIONS = 64           # api/http_server.h kMaxConnections
TOO_DEEP = "JSON nested deeper than 64 levels"


def http(sock, method, path, body=b"", timeout=120, headers_only=False):
    """One request on its own connection: (status, body). status is None
    when the server closed or stalled without answering."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(sock)
        except ConnectionRefusedError:
            return None, "connection refused"
        head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            s.sendall(head if headers_only else head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body was sent
        return read_response(s)


def read_response(s):
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = 0
            for line in data[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) >= end + 4 + length:
                return int(data.split(b" ", 2)[1]), data[end + 4:end + 4 + length].decode()
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            return None, data.decode(errors="replace")
        data += chunk


class Vmm:
    """An ember serving its API with the built-in seccomp filters."""

    def __init__(self, ember, workdir, args=()):
        self.workdir = Path(workdir)
        self.sock = str(self.workdir / "api.sock")
        self.log_path = self.workdir / "ember.log"
        self.console_path = self.workdir / "console.out"
        with open(self.console_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen([str(ember), "--api-sock", self.sock, *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock) or self.get("/", timeout=5)[0] != 200:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def console(self):
        return self.console_path.read_text(errors="replace")

    def request(self, method, path, body=b"", **kw):
        return http(self.sock, method, path, body, **kw)

    def get(self, path, timeout=30):
        try:
            return http(self.sock, "GET", path, timeout=timeout)
        except (ConnectionRefusedError, FileNotFoundError):
            return None, ""

    def boot(self, guest):
        for path, body in [
                ("/machine-config", b'{"vcpu_count": 1, "mem_size_mib": 128}'),
                ("/boot-source", ('{"kernel_image_path": "%s", "initrd_path": "%s", '
                                  '"boot_args": "%s"}' % (guest["vmlinux"], guest["initramfs.cpio"],
                                                          IDLE_ARGS)).encode()),
                ("/actions", b'{"action_type": "InstanceStart"}')]:
            status, reply = self.request("PUT", path, body)
            assert status == 204, (path, reply, self.log())
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while "Run /init as init process" not in self.console():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.5)
        return self

    def expect_fault(self, method, path, body, needle, **kw):
        status, reply = self.request(method, path, body, **kw)
        assert status == 400, (method, path, len(body), status, reply[:300], self.state())
        assert needle in reply, (needle, reply[:300])

    def state(self):
        """For assertion messages: how ember exited, or "running"."""
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "running"
        return f"ember exited with {code}\n{self.log()[-3000:]}"

    def assert_serving(self, state="Running"):
        """The process lives, answers GET /, and (with a guest) its vCPU
        thread is still there."""
        assert self.proc.poll() is None, self.state()
        status, reply = self.get("/")
        assert status == 200 and json.loads(reply)["state"] == state, (status, reply, self.state())
        if state == "Running":
            tasks = Path(f"/proc/{self.proc.pid}/task")
            names = {(t / "comm").read_text().strip() for t in tasks.iterdir()}
            assert "vcpu0" in names, names

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class SharedGuest:
    """One booted guest at the highest payload limit, for all the checks; a
    new one when a check killed the last."""

    def __init__(self, ember, guest, factory):
        self.ember, self.guest, self.factory = ember, guest, factory
        self.vmm = None
        self.deaths = []

    def get(self):
        if self.vmm is not None and self.vmm.get("/", timeout=10)[0] != 200:
            self.deaths.append(self.vmm.state())
            if self.vmm.proc.poll() is None:
                self.deaths[-1] = "its API stopped answering"
                self.vmm.proc.kill()
                self.vmm.proc.wait()
            self.vmm = None
        if self.vmm is None:
            vmm = Vmm(self.ember, self.factory.mktemp("guest"),
                      ["--http-api-max-payload-size", str(HIGHEST_LIMIT)])
            try:
                vmm.boot(self.guest)
            except BaseException:
                vmm.stop()  # a boot that failed (no KVM) must not leave its ember
                raise
            self.vmm = vmm
        return self.vmm

    def close(self):
        if self.vmm is not None:
            self.vmm.stop()


@pytest.fixture(scope="module")
def shared(ember, guest, tmp_path_factory):
    s = SharedGuest(ember, guest, tmp_path_factory)
    yield s
    s.close()


def array_body(size, field=b"vcpu_count"):
    """{"vcpu_count":[1,1,...]} of exactly `size` bytes."""
    head, tail = b'{"' + field + b'":[', b"1]}"
    n = size - len(head) - len(tail)
    return head + b"1," * (n // 2) + b" " * (n % 2) + tail


def string_body(size, field=b"vcpu_count"):
    head = b'{"' + field + b'":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def keys_body(size):
    parts, n, i = [b"{"], 1, 0
    while n < size - 20:
        key = b'"k%d":1,' % i
        parts.append(key)
        n += len(key)
        i += 1
    parts.append(b'"z":1' + b" " * (size - n - 6) + b"}")
    return b"".join(parts)


def padded(body, size):
    """`body`, a JSON object, with blanks before its last brace to `size` bytes."""
    return body[:-1] + b" " * (size - len(body)) + b"}"


def cpu_config_body(size):
    """PUT /cpu-config of exactly `size` bytes: as many MSR modifiers as fit,
    far more than the 255 KVM takes."""
    one = b'{"addr":"0x10a","bitmap":"0b' + b"x1" * 32 + b'"},'
    head, tail = b'{"msr_modifiers":[', b'{"addr":"0x10a","bitmap":"0b1"}]}'
    n = (size - len(head) - len(tail)) // len(one)
    body = head + one * n + tail
    return body[:-1] + b" " * (size - len(body)) + b"}"


def metrics_body(size, path):
    """PUT /metrics of exactly `size` bytes: as many properties as fit."""
    head = b'{"metrics_path":"%s","emit_id":true,"properties":{' % str(path).encode()
    parts, n, i = [head], len(head), 0
    while n < size - 40:
        prop = b'"k%05d":"v",' % i
        parts.append(prop)
        n += len(prop)
        i += 1
    body = b"".join(parts) + b'"z":"v"}}'
    return body[:-1] + b" " * (size - len(body)) + b"}", i + 1


def test_the_largest_bodies_at_the_default_limit(ember, tmp_path):
    """The body of issue 12 killed the VMM with 148: glibc trimmed the API
    thread's own malloc arena and read /proc/sys/vm/overcommit_memory."""
    vmm = Vmm(ember, tmp_path)
    try:
        for name, body, needle in [
                ("array", array_body(DEFAULT_LIMIT), "vcpu_count must be an integer"),
                ("brackets", b"[" * DEFAULT_LIMIT, TOO_DEEP),
                ("string", string_body(DEFAULT_LIMIT), "vcpu_count must be an integer"),
                ("keys", keys_body(DEFAULT_LIMIT), "vcpu_count is required"),
                ("array again", array_body(DEFAULT_LIMIT), "vcpu_count must be an integer")]:
            assert len(body) == DEFAULT_LIMIT, name
            vmm.expect_fault("PUT", "/machine-config", body, needle)
            vmm.assert_serving("Not started")
        # The CPU template parser, the newest, with the most modifiers a body holds.
        body = cpu_config_body(DEFAULT_LIMIT)
        assert len(body) == DEFAULT_LIMIT
        vmm.expect_fault("PUT", "/cpu-config", body, "cpu-config.msr_modifiers: at most 255")
        vmm.assert_serving("Not started")
        vmm.expect_fault("PUT", "/machine-config", b"1" * (DEFAULT_LIMIT + 1),
                         "larger than the limit of 51200 bytes", headers_only=True)
        vmm.assert_serving("Not started")
        # Memory hotplug's bodies at the limit. Its region is reserved only
        # at the start, so a valid one maps nothing yet.
        vmm.expect_fault("PUT", "/hotplug/memory",
                         array_body(DEFAULT_LIMIT, b"total_size_mib"),
                         "total_size_mib must be an integer")
        vmm.expect_fault("PUT", "/hotplug/memory",
                         padded(b'{"total_size_mib":4294967295}', DEFAULT_LIMIT),
                         "must be a non-zero multiple of slot_size_mib")
        vmm.expect_fault("PATCH", "/hotplug/memory",
                         padded(b'{"requested_size_mib":4294967295}', DEFAULT_LIMIT),
                         "not supported before starting the microVM")
        status, reply = vmm.request("PUT", "/hotplug/memory", padded(
            b'{"total_size_mib":1024,"slot_size_mib":128,"block_size_mib":2}', DEFAULT_LIMIT))
        assert status == 204, (reply[:300], vmm.state())
        vmm.assert_serving("Not started")
        # MMDS numbers as long as a body holds, each read by strtod.
        body = b"[0." + b"0" * (DEFAULT_LIMIT - 5) + b"1]"
        status, reply = vmm.request("PUT", "/mmds", body)
        assert status == 204, (reply[:300], vmm.state())
        vmm.expect_fault("PUT", "/mmds", b"[" + b"9" * (DEFAULT_LIMIT - 2) + b"]",
                         "Number too big")
        vmm.assert_serving("Not started")
        # Request targets as long as Beast's 8 KiB header takes, routed by
        # RoutedPath on the API thread: slashes, an absolute form's host,
        # and an MMDS body (a secret) that must stay out of the log.
        status, reply = vmm.request("GET", "/" * 7900 + "machine-config/")
        assert status == 200 and "vcpu_count" in str(reply), (status, str(reply)[:300])
        status, reply = vmm.request("GET", "http://" + "h" * 7900 + "/version")
        assert status == 200 and "firecracker_version" in str(reply), (status, str(reply)[:300])
        vmm.expect_fault("PUT", "/" * 7900 + "mmds//", b'{"secret": "long-target-secret"}',
                         "Invalid request method and/or path: PUT /mmds/.")
        assert "long-target-secret" not in vmm.log()
        vmm.assert_serving("Not started")
        # A pmem path as long as a body holds: opened on the VMM thread.
        head, tail = b'{"id":"p0","path_on_host":"/', b'"}'
        body = head + b"p" * (DEFAULT_LIMIT - len(head) - len(tail)) + tail
        vmm.expect_fault("PUT", "/pmem/p0", body, "pmem[p0].path_on_host")
        vmm.assert_serving("Not started")
        # Metrics labels as many as a body holds: every line carries them,
        # rendered on the VMM thread; the line a fatal signal would leave
        # has no room and goes without (a warning says so).
        metrics = tmp_path / "metrics.json"
        body, count = metrics_body(DEFAULT_LIMIT, metrics)
        assert len(body) == DEFAULT_LIMIT
        status, reply = vmm.request("PUT", "/metrics", body)
        assert status == 204, (reply[:300], vmm.state())
        status, reply = vmm.request("PUT", "/actions", b'{"action_type": "FlushMetrics"}')
        assert status == 204, (reply[:300], vmm.state())
        line = json.loads(metrics.read_text().splitlines()[-1])
        assert len(line["properties"]) == count and line["id"] == "anonymous-instance"
        assert "the line a fatal signal leaves has room" in vmm.log()
        vmm.assert_serving("Not started")
        assert vmm.stop() == EXIT_SIGTERM, vmm.log()
    finally:
        vmm.stop()


def test_the_largest_bodies_with_a_running_guest(shared):
    vmm = shared.get()
    drive = b'{"drive_id":"nope","path_on_host":"' + b"p" * (HIGHEST_LIMIT - 41) + b'"}'
    boot = b'{"kernel_image_path":"' + b"k" * (HIGHEST_LIMIT - 25) + b'"}'
    for name, method, path, body, needle in [
            ("default-size array", "PUT", "/machine-config", array_body(DEFAULT_LIMIT),
             "vcpu_count must be an integer"),
            ("array", "PUT", "/machine-config", array_body(HIGHEST_LIMIT),
             "vcpu_count must be an integer"),
            ("string", "PUT", "/machine-config", string_body(HIGHEST_LIMIT),
             "vcpu_count must be an integer"),
            ("keys", "PUT", "/machine-config", keys_body(DEFAULT_LIMIT * 20),
             "vcpu_count is required"),
            # Parsed on the API thread, refused (and freed) by the VMM thread.
            ("boot-source", "PUT", "/boot-source", boot, "not supported after starting the microVM"),
            ("drive", "PATCH", "/drives/nope", drive, "there is no drive 'nope'"),
            ("mmds number", "PUT", "/mmds", b"[" + b"9" * (HIGHEST_LIMIT - 2) + b"]",
             "Number too big"),
            # Parsed on the API thread, looked for on the VMM thread.
            ("hotplug", "PATCH", "/hotplug/memory",
             padded(b'{"requested_size_mib":1}', HIGHEST_LIMIT), "there is no memory hotplug")]:
        assert len(body) <= HIGHEST_LIMIT, name
        vmm.expect_fault(method, path, body, needle)
        vmm.assert_serving()
    vmm.expect_fault("PUT", "/machine-config", b"1" * (HIGHEST_LIMIT + 1),
                     f"larger than the limit of {HIGHEST_LIMIT} bytes", headers_only=True)
    vmm.assert_serving()


# Not UTF-8, found last: after every string and key was walked.
NOT_UTF8_HEAD, NOT_UTF8_TAIL = b'{"vcpu_count":[', b'"\xff"]}'
NOT_UTF8_LAST = (HIGHEST_LIMIT - len(NOT_UTF8_HEAD) - len(NOT_UTF8_TAIL)) // 4


@pytest.mark.parametrize("name", ["not UTF-8", "long key", "forging key"])
def test_the_largest_bodies_that_are_not_utf8_or_bad_keys(shared, name):
    """Apart from the test above: each test has its own time limit, and an
    emulated CPU takes a minute or more over each of these 64 MiB bodies."""
    body, needle = {
        "not UTF-8": lambda: (NOT_UTF8_HEAD + b'"x",' * NOT_UTF8_LAST + NOT_UTF8_TAIL,
                              f"vcpu_count[{NOT_UTF8_LAST}] is not valid UTF-8"),
        "long key": lambda: (b'{"' + b"k" * (HIGHEST_LIMIT - 12) + b'":"\xff"}',
                             "k" * 64 + "... is not valid UTF-8"),
        # A key that would forge a log line if echoed whole.
        "forging key": lambda: (b'{"vcpu_count":1,"mem_size_mib":128,"a\\n'
                                + b"k" * (HIGHEST_LIMIT - 50) + b'":1}',
                                "unknown field 'a\\\\x0a" + "k" * 62 + "...'"),
    }[name]()
    assert len(body) <= HIGHEST_LIMIT
    vmm = shared.get()
    vmm.expect_fault("PUT", "/machine-config", body, needle)
    vmm.assert_serving()


def test_deep_nesting_in_api_bodies(shared):
    """With a raised limit, a million `[` overflowed the API thread's stack."""
    vmm = shared.get()
    for body, needle in [
            (b"[" * (1 << 20), TOO_DEEP),
            (b'{"vcpu_count":' + b"[" * (HIGHEST_LIMIT - 14), TOO_DEEP),
            (b'{"vcpu_count":' + b"{" * (1 << 20), TOO_DEEP),
            # 64 levels are read; 65 are not.
            (b'{"vcpu_count":' + b"[" * 63 + b"]" * 63 + b"}", "vcpu_count must be an integer"),
            (b'{"vcpu_count":' + b"[" * 64 + b"]" * 64 + b"}", TOO_DEEP),
            # Brackets in a string are not nesting.
            (b'{"vcpu_count":"' + b"[" * (1 << 20) + b'"}', "vcpu_count must be an integer")]:
        vmm.expect_fault("PUT", "/machine-config", body, needle)
        vmm.assert_serving()


@pytest.mark.usefixtures("kvm")
@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_a_log_nobody_reads_never_holds_the_vmm(ember, guest, tmp_path, kind):
    """Ember's stderr, where its log goes by default, is a pipe or a socket
    (journald's stream) whose reader stopped reading: the lines that do not
    fit are dropped, and the API and VMM threads go on answering, before
    the start and with the VM running under every thread's seccomp filter
    (the vCPU and VMM threads log too); SIGTERM still stops it in order."""
    r, w = small_channel(kind)
    sock = str(tmp_path / "api.sock")
    proc = subprocess.Popen([str(ember), "--api-sock", sock], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=w)
    os.close(w)
    try:
        wait_for_api(sock, proc)
        # Two log lines a request, ~250 KiB in all: 60 times what fits.
        good = json.dumps({"vcpu_count": 1, "mem_size_mib": 128}).encode()
        for i in range(600):
            body = good if i % 2 else b'{"vcpu_count": "x"}'
            status, answer = http(sock, "PUT", "/machine-config", body, timeout=10)
            assert status == (204 if i % 2 else 400), (i, answer)
        boot = {"kernel_image_path": str(guest["vmlinux"]), "boot_args": IDLE_ARGS}
        assert http(sock, "PUT", "/boot-source", json.dumps(boot).encode())[0] == 204
        start = json.dumps({"action_type": "InstanceStart"}).encode()
        assert http(sock, "PUT", "/actions", start)[0] == 204
        for i in range(100):  # the VMM thread logs each under its filter
            for state in ("Paused", "Resumed"):
                body = json.dumps({"state": state}).encode()
                assert http(sock, "PATCH", "/vm", body, timeout=10)[0] == 204, (i, state)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == EXIT_SIGTERM, "not a seccomp kill (148)"
        assert b"Ember v" in os.read(r, 4096), "the first lines went out"
    finally:
        proc.kill()
        proc.wait()
        os.close(r)


def test_more_connections_than_the_cap(shared):
    vmm = shared.get()
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(vmm.sock)
            held.append(s)
        # Each held connection is served (which also shows it was accepted).
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200, vmm.state()
        # Past the cap: answered 503 and closed, and the VMM carries on.
        for _ in range(20):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(vmm.sock)
                status, reply = read_response(s)
                assert status == 503 and "too many open connections" in reply, (status, reply,
                                                                                 vmm.state())
                assert s.recv(1) == b"", "closed after the answer"
        # The held ones are still served.
        for s in held[:4]:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200, vmm.state()
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 30
    while vmm.get("/")[0] != 200:
        assert time.monotonic() < deadline, vmm.state()
        time.sleep(0.1)
    vmm.assert_serving()
    # Rate-limited: the first 8 refusals are logged, then every 1024th.
    assert vmm.log().count("refusing another") == 8, vmm.log()[-3000:]


def test_running_out_of_file_descriptors(shared):
    """One EMFILE from accept stopped the API for good."""
    vmm = shared.get()
    pid = vmm.proc.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    clients = []
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (highest + 4, old[1]))
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(vmm.sock)  # accepted, or waiting in the backlog
            clients.append(s)
        deadline = time.monotonic() + 30
        while "Too many open files" not in vmm.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vmm.proc.poll() is None, vmm.state()
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        for s in clients:
            s.close()
    # Descriptors free again: the API answers.
    deadline = time.monotonic() + 30
    while vmm.get("/", timeout=10)[0] != 200:
        assert time.monotonic() < deadline, "the API stopped accepting: " + vmm.state()
        time.sleep(0.2)
    vmm.assert_serving()
    assert "accept failed (Too many open files" in vmm.log(), "the check never ran out"


def rewrite_config(state_file, out, config):
    """The state file (src/vmm/snapshot/state_file.h) with its config
    section (id 1) replaced and the checksum made right."""
    data = state_file.read_bytes()
    assert data[:8] == b"EMBERSNP"
    version, length, _ = struct.unpack_from("<IQI", data, 8)
    payload, pos, sections = data[24:], 0, []
    assert len(payload) == length
    while pos < len(payload):
        sid, sver, blen = struct.unpack_from("<HHI", payload, pos)
        body = payload[pos + 8:pos + 8 + blen]
        if sid == 1:
            body = struct.pack("<I", len(config)) + config
        sections.append(struct.pack("<HHI", sid, sver, len(body)) + body)
        pos += 8 + blen
    payload = b"".join(sections)
    out.write_bytes(b"EMBERSNP" + struct.pack("<IQI", version, len(payload),
                                              zlib.crc32(payload)) + payload)
    return out


def test_a_snapshot_whose_configuration_nests_deep(ember, shared, tmp_path):
    """A million `[` in the state file's configuration, with a valid CRC,
    overflowed the VMM thread's stack on load."""
    vmm = shared.get()
    state, mem = tmp_path / "vm.snap", tmp_path / "vm.mem"
    assert vmm.request("PATCH", "/vm", b'{"state": "Paused"}')[0] == 204, vmm.state()
    status, reply = vmm.request("PUT", "/snapshot/create", (
        '{"snapshot_path": "%s", "mem_file_path": "%s", "snapshot_type": "Full"}'
        % (state, mem)).encode())
    assert status == 204, reply
    assert vmm.request("PATCH", "/vm", b'{"state": "Resumed"}')[0] == 204, vmm.state()
    vmm.assert_serving()

    deep = rewrite_config(state, tmp_path / "deep.snap", b"[" * 1_000_000)
    loader_dir = tmp_path / "loader"
    loader_dir.mkdir()
    loader = Vmm(ember, loader_dir)
    try:
        loader.expect_fault("PUT", "/snapshot/load", (
            '{"snapshot_path": "%s", "mem_backend": {"backend_type": "File", '
            '"backend_path": "%s"}}' % (deep, mem)).encode(), TOO_DEEP)
        loader.assert_serving("Not started")
        assert loader.stop() == EXIT_SIGTERM, loader.log()
    finally:
        loader.stop()
    mem.unlink()


def test_a_config_file_that_nests_deep(ember, tmp_path):
    """A million `[` in --config-file overflowed the main thread's stack."""
    r = run_ember(ember, tmp_path, config='{"boot-source":' + "[" * (1 << 20) + "}", timeout=60)
    assert r.code == EXIT_BAD_CONFIGURATION, r
    assert TOO_DEEP in r.log, r


def test_the_guest_lived_through_it_all(shared):
    """Runs last: every check above was served by one VMM, and SIGTERM ends
    it in order."""
    vmm = shared.get()
    assert not shared.deaths, "checks killed the VMM:\n" + "\n".join(shared.deaths)
    vmm.assert_serving()
    assert vmm.stop() == EXIT_SIGTERM, vmm.log()[-3000:]
    assert "denied" not in vmm.log(), vmm.log()[-3000:]
    shared.vmm = None
