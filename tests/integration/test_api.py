"""The HTTP API on its Unix socket, driven with curl as a Firecracker client
would: a whole life of a real guest, and bad input of every kind answered
with 400 and a fault_message while Ember keeps serving."""

import json
import os
import shutil
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (EXIT_OK, EXIT_SIGTERM, NOT_SUPPORTED_AFTER_START, NOT_SUPPORTED_BEFORE_START,
                      http_request, wait_for_api)

from metrics_lines import mark, total


class Api:
    """An ember process serving its API, and curl against it."""

    def __init__(self, ember, workdir, args=(), prefix=()):
        self.sock = str(workdir / "api.sock")
        self.log_path = workdir / "ember.log"
        self.console_path = workdir / "console.out"
        with open(self.console_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen([*prefix, str(ember), "--api-sock", self.sock, *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            wait_for_api(self.sock, self.proc)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.log()}") from None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def console(self):
        return self.console_path.read_text(errors="replace")

    def request(self, method, path, body=None, raw=None):
        """Returns (status, parsed JSON or None)."""
        return http_request(self.sock, method, path, body, raw)

    def expect_fault(self, method, path, needle, body=None, raw=None):
        status, reply = self.request(method, path, body, raw)
        assert status == 400, (status, reply)
        assert needle in reply["fault_message"], reply
        assert self.request("GET", "/")[0] == 200, "Ember keeps serving"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=60)


def vcpu_ticks(pid):
    """CPU ticks (utime + stime) of the thread vcpu0."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == "vcpu0":
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
    raise AssertionError("no vcpu0 thread")


@pytest.fixture
def api(ember, tmp_path):
    started = []

    def start(*args, prefix=()):
        a = Api(ember, tmp_path, args, prefix)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


@pytest.mark.usefixtures("kvm")
def test_a_whole_life_over_the_api(api, guest):
    a = api()
    assert a.request("GET", "/")[1]["state"] == "Not started"
    assert a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})[0] == 204
    assert a.request("PATCH", "/machine-config", {"mem_size_mib": 160})[0] == 204
    assert a.request("GET", "/machine-config")[1]["mem_size_mib"] == 160
    assert a.request("PUT", "/boot-source", {
        "kernel_image_path": str(guest["vmlinux"]), "initrd_path": str(guest["initramfs.cpio"]),
        "boot_args": "console=ttyS0 reboot=k panic=1 pci=off ember_idle"})[0] == 204
    workdir = Path(a.sock).parent
    (workdir / "data1.img").write_bytes(b"\0" * (1 << 20))
    (workdir / "data2.img").write_bytes(b"\0" * (2 << 20))
    # Async: the swap below re-registers the file on the io_uring ring,
    # under the VMM thread's seccomp filter.
    assert a.request("PUT", "/drives/data", {"drive_id": "data", "is_root_device": False,
                                             "path_on_host": str(workdir / "data1.img"),
                                             "io_engine": "Async"})[0] == 204
    # Before the start a PUT sets a device; a PATCH is refused, as by Firecracker.
    a.expect_fault("PATCH", "/drives/data", NOT_SUPPORTED_BEFORE_START,
                   {"drive_id": "data", "path_on_host": str(workdir / "data2.img")})
    assert a.request("PUT", "/balloon", {"amount_mib": 0, "deflate_on_oom": False,
                                         "stats_polling_interval_s": 1})[0] == 204
    logfile = Path(a.sock).parent / "api-logger.log"
    assert a.request("PUT", "/logger", {"log_path": str(logfile), "level": "Debug",
                                        "show_level": True, "show_log_origin": True})[0] == 204
    a.expect_fault("PUT", "/logger", "logger.level 'Loud'", {"level": "Loud"})
    metrics = Path(a.sock).parent / "metrics.json"
    assert a.request("PUT", "/metrics", {"metrics_path": str(metrics)})[0] == 204
    a.expect_fault("PUT", "/metrics", "Reinitialization of metrics not allowed.", {"metrics_path": str(metrics)})
    assert a.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
    first = json.loads(metrics.read_text().splitlines()[-1])
    assert first["ember"]["vm_state"] == "Not started"
    assert first["api_server"]["requests"] >= 4 and first["api_server"]["faults"] >= 2
    assert first["put_api_requests"]["metrics_count"] == 2
    assert first["put_api_requests"]["metrics_fails"] == 1
    after_first = mark(metrics)
    config = a.request("GET", "/vm/config")[1]
    assert config["machine-config"]["mem_size_mib"] == 160
    assert config["balloon"]["stats_polling_interval_s"] == 1
    a.expect_fault("GET", "/balloon/statistics", NOT_SUPPORTED_BEFORE_START)
    a.expect_fault("PATCH", "/balloon", NOT_SUPPORTED_BEFORE_START, {"amount_mib": 1})
    a.expect_fault("PATCH", "/vm", NOT_SUPPORTED_BEFORE_START, {"state": "Paused"})

    assert a.request("PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
    assert a.request("GET", "/")[1]["state"] == "Running"
    a.expect_fault("PUT", "/actions", NOT_SUPPORTED_AFTER_START + " The microVM is already running.",
                   {"action_type": "InstanceStart"})
    a.expect_fault("PUT", "/boot-source", NOT_SUPPORTED_AFTER_START + " Set boot-source before",
                   {"kernel_image_path": "/x"})
    a.expect_fault("PUT", "/machine-config", NOT_SUPPORTED_AFTER_START,
                   {"vcpu_count": 2, "mem_size_mib": 128})

    # The balloon target changes while the guest runs; statistics arrive.
    # Generous: guests boot at emulated speed here, slower still while the
    # fuzzers and other guests share the two cores.
    deadline = time.monotonic() + 300
    while "Run /init as init process" not in a.console():
        assert time.monotonic() < deadline, a.console()
        time.sleep(1)
    # Swap the drive's backing file: the guest sees the new size.
    assert "[vda] 2048 512-byte logical blocks" in a.console()
    a.expect_fault("PATCH", "/drives/data", "/nonexistent/disk.img",
                   {"drive_id": "data", "path_on_host": "/nonexistent/disk.img"})
    a.expect_fault("PATCH", "/drives/data", "the PATCH changes nothing", {"drive_id": "data"})
    a.expect_fault("PATCH", "/drives/nope", "there is no drive 'nope'",
                   {"drive_id": "nope", "path_on_host": "/x"})
    assert a.request("PATCH", "/drives/data", {"drive_id": "data",
                                               "path_on_host": str(workdir / "data2.img")})[0] == 204
    deadline = time.monotonic() + 60
    while "[vda] new size: 4096 512-byte logical blocks" not in a.console():
        assert time.monotonic() < deadline, a.console()[-2000:]
        time.sleep(0.5)
    assert a.request("GET", "/vm/config")[1]["drives"][0]["path_on_host"].endswith("data2.img")

    assert a.request("PATCH", "/balloon/statistics", {"stats_polling_interval_s": 2})[0] == 204
    a.expect_fault("PATCH", "/balloon/statistics", "cannot be turned on or off",
                   {"stats_polling_interval_s": 0})
    a.expect_fault("PATCH", "/network-interfaces/eth0", "there is no network interface 'eth0'",
                   {"iface_id": "eth0"})
    assert a.request("PATCH", "/balloon", {"amount_mib": 32})[0] == 204
    assert a.request("GET", "/balloon")[1]["amount_mib"] == 32
    a.expect_fault("PATCH", "/balloon", "more than machine-config.mem_size_mib",
                   {"amount_mib": 4096})
    deadline = time.monotonic() + 120
    while True:
        status, stats = a.request("GET", "/balloon/statistics")
        if status == 200 and stats.get("actual_mib") == 32:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(1)
    assert stats["target_mib"] == 32
    assert stats["free_memory"] > 0 and stats["total_memory"] > 0
    assert a.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
    running = json.loads(metrics.read_text().splitlines()[-1])
    assert running["ember"]["vm_state"] == "Running"
    # Counts are changes since the line before (a line comes every 60 s too).
    assert total(metrics, "balloon", "stats_updates_count", since=after_first) > 0
    assert running["balloon"]["target_pages"] == 32 * 256
    assert total(metrics, "api_server", "requests", since=after_first) > 0

    # Pause: the guest's vCPU (spinning in its idle init) stops using CPU.
    assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
    assert a.request("GET", "/")[1]["state"] == "Paused"
    before = vcpu_ticks(a.proc.pid)
    time.sleep(1)
    assert vcpu_ticks(a.proc.pid) == before, "a paused vCPU must not run"
    a.expect_fault("PATCH", "/vm", "must be \"Paused\" or \"Resumed\"", {"state": "Stopped"})
    assert a.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
    assert a.request("GET", "/")[1]["state"] == "Running"
    deadline = time.monotonic() + 30
    while vcpu_ticks(a.proc.pid) <= before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vcpu_ticks(a.proc.pid) > before + 5, "running again"

    # Ctrl-Alt-Del: the guest kernel reboots (reboot=k), which ends Ember.
    assert a.request("PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0] == 204
    assert a.proc.wait(timeout=120) == EXIT_OK
    # From PUT /logger on, the log went to its file, with level and origin.
    log = logfile.read_text()
    assert "all vCPU threads joined" in log
    assert "sent Ctrl-Alt-Del to the guest" in log
    assert "guest reset through the i8042" in log
    assert re.search(r"\] INFO \[vm\.cc:\d+\] ready to boot", log), log
    assert "DEBUG" in log, "balloon statistics are logged at Debug"
    assert "ready to boot" not in a.log()
    lines = metrics.read_text().splitlines()
    assert len(lines) >= 3, "a final line at exit"
    assert json.loads(lines[-1])["utc_timestamp_ms"] >= running["utc_timestamp_ms"]
    assert not Path(a.sock).exists(), "socket removed on exit"


def test_bad_requests_get_400_and_a_fault_message(api, guest):
    a = api("--http-api-max-payload-size", "2000")
    a.expect_fault("PUT", "/machine-config", "malformed JSON", raw='{"vcpu_count": ')
    a.expect_fault("PUT", "/machine-config", "machine-config.vcpu_count must be an integer",
                   {"vcpu_count": "one", "mem_size_mib": 128})
    a.expect_fault("PUT", "/machine-config", "machine-config: unknown field 'cpus'",
                   {"vcpu_count": 1, "mem_size_mib": 128, "cpus": 2})
    a.expect_fault("PUT", "/machine-config", "machine-config.mem_size_mib is required",
                   {"vcpu_count": 1})
    a.expect_fault("PUT", "/machine-config", "got 33", {"vcpu_count": 33, "mem_size_mib": 128})
    a.expect_fault("PUT", "/machine-config",
                   'machine-config.mem_size_mib 129 must be a multiple of 2 with huge_pages "2M"',
                   {"vcpu_count": 1, "mem_size_mib": 129, "huge_pages": "2M"})
    a.expect_fault("PATCH", "/machine-config",
                   "machine-config.huge_pages '1G' must be \"None\", \"Transparent\" or \"2M\"",
                   {"huge_pages": "1G"})
    assert a.request("PATCH", "/machine-config", {"huge_pages": "Transparent"})[0] == 204
    assert a.request("GET", "/machine-config")[1]["huge_pages"] == "Transparent"
    a.expect_fault("PATCH", "/machine-config", "must be a multiple of 2", {"mem_size_mib": 127})
    a.expect_fault("PUT", "/machine-config", "with smt, the vCPUs are pairs of threads",
                   {"vcpu_count": 3, "mem_size_mib": 128, "smt": True})
    assert a.request("PATCH", "/machine-config", {"huge_pages": "None"})[0] == 204
    a.expect_fault("PUT", "/snapshot/load", "'2m' must be \"Snapshot\", \"None\"",
                   {"snapshot_path": "/s", "mem_file_path": "/m", "huge_pages": "2m"})
    a.expect_fault("PUT", "/drives/root",
                   "The id from the path [root] does not match the id from the body [data]!",
                   {"drive_id": "data", "path_on_host": "/x", "is_root_device": False})
    a.expect_fault("PUT", "/boot-source", "larger than the limit of 2000 bytes",
                   {"kernel_image_path": "x" * 3000})
    a.expect_fault("GET", "/no/such/path", "Invalid request method and/or path: GET /no/such/path.")
    # Targets as Firecracker's server takes them: the absolute form, and
    # extra slashes at the ends. Extra segments, which it ignores, Ember
    # refuses.
    for target, field in (("http://localhost/version", b'"firecracker_version"'),
                          ("//machine-config/", b'"vcpu_count"')):
        with socket.socket(socket.AF_UNIX) as s:  # curl sends neither as it is
            s.connect(str(a.sock))
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n"
                      "Connection: close\r\n\r\n".encode())
            answer = b"".join(iter(lambda: s.recv(4096), b""))
            assert answer.startswith(b"HTTP/1.1 200 ") and field in answer, (target, answer)
    a.expect_fault("GET", "/machine-config/x", "Invalid request method and/or path")
    a.expect_fault("DELETE", "/machine-config",
                   "Invalid request method and/or path: DELETE /machine-config.")
    a.expect_fault("PUT", "/hotplug/memory", "memory-hotplug.total_size_mib is required", {})
    a.expect_fault("PUT", "/vsock", "vsock.guest_cid 1 is reserved", {"guest_cid": 1, "uds_path": "v"})
    taken = Path(a.sock)
    a.expect_fault("PUT", "/vsock", f"vsock.uds_path {taken} already exists",
                   {"guest_cid": 3, "uds_path": str(taken)})
    a.expect_fault("PUT", "/vsock", "directory /nonexistent does not exist",
                   {"guest_cid": 3, "uds_path": "/nonexistent/v.sock"})
    a.expect_fault("PUT", "/snapshot/load", "snapshot/load.snapshot_path is required", {})
    a.expect_fault("PUT", "/actions", NOT_SUPPORTED_BEFORE_START, {"action_type": "SendCtrlAltDel"})
    a.expect_fault("PUT", "/actions", "must be InstanceStart",
                   {"action_type": "Reboot"})
    # Starting without a kernel, or with one that is not, fails and changes
    # nothing: the VM can still be configured and started afterwards.
    a.expect_fault("PUT", "/actions", "boot-source is missing", {"action_type": "InstanceStart"})
    not_a_kernel = Path(a.sock).parent / "notes.txt"
    not_a_kernel.write_text("this is not a kernel\n" * 100)
    assert a.request("PUT", "/boot-source", {"kernel_image_path": str(not_a_kernel)})[0] == 204
    a.expect_fault("PUT", "/actions", "is neither an ELF vmlinux nor a bzImage",
                   {"action_type": "InstanceStart"})
    assert a.request("GET", "/")[1]["state"] == "Not started"


def test_pipelined_slow_and_many_clients(api):
    a = api()
    # Two requests in one write on one connection: two answers, in order.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(a.sock)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
            data += s.recv(4096)
        assert data.count(b"HTTP/1.1 200") == 2, data
        assert data.index(b"Not started") < data.index(b"firecracker_version")
    # A client that sends half a request and stalls, and one that closes
    # halfway, do not stop others from being served.
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(a.sock)
    stalled.sendall(b"PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    with socket.socket(socket.AF_UNIX) as half:
        half.connect(a.sock)
        half.sendall(b"GET / HTT")
        half.shutdown(socket.SHUT_WR)
    # Many connections at once.
    results = []
    def one():
        results.append(a.request("GET", "/")[0])
    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 32
    stalled.close()
    assert a.request("GET", "/")[0] == 200


def test_a_logger_set_again_and_again_holds_one_file(api, tmp_path):
    """As Firecracker, PUT /logger may come many times before the start;
    each replaces the last, and none leaves a descriptor behind."""
    a = api()
    fds = lambda: len(os.listdir(f"/proc/{a.proc.pid}/fd"))
    logs = [tmp_path / f"log{i}" for i in range(50)]
    assert a.request("PUT", "/logger", {"log_path": str(logs[0]), "module": "api"})[0] == 204
    before = fds()
    for i, log in enumerate(logs[1:]):
        assert a.request("PUT", "/logger", {"log_path": str(log), "module": f"api{i}"})[0] == 204
    assert fds() == before
    assert a.request("PUT", "/logger", {"log_path": str(logs[-1]), "module": "api/"})[0] == 204
    assert a.request("GET", "/machine-config")[0] == 200
    assert 'request on "/machine-config"' in logs[-1].read_text()
    assert 'request on "/machine-config"' not in logs[-2].read_text()


def test_metrics_and_log_fifos_nobody_reads_are_taken(api, tmp_path):
    """As Firecracker takes them: the Go SDK makes a metrics FIFO and never
    reads it. Lines that do not fit are dropped; Ember serves on."""
    a = api()
    for name in ("metrics.fifo", "log.fifo"):
        os.mkfifo(tmp_path / name)
    assert a.request("PUT", "/metrics", {"metrics_path": str(tmp_path / "metrics.fifo")})[0] == 204
    assert a.request("PUT", "/logger", {"log_path": str(tmp_path / "log.fifo"),
                                        "level": "Debug"})[0] == 204
    for _ in range(200):  # more than a pipe holds
        assert a.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
    assert a.request("GET", "/")[0] == 200


def test_an_existing_socket_path_is_refused(ember, tmp_path):
    path = tmp_path / "taken.sock"
    path.write_text("")
    proc = subprocess.run([str(ember), "--api-sock", str(path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0
    assert f"cannot serve the API on {path}: it already exists" in proc.stderr


def test_a_life_with_ember_client(ember, api, guest):
    a = api()
    client = ember.parent / "ember-client"

    def run(*args):
        return subprocess.run([str(client), "--api-sock", a.sock, *args], capture_output=True,
                              text=True, timeout=30)

    assert run("PUT", "/machine-config", '{"vcpu_count": 1, "mem_size_mib": 128}').returncode == 0
    boot = {"kernel_image_path": str(guest["vmlinux"]), "initrd_path": str(guest["initramfs.cpio"]),
            "boot_args": "console=ttyS0 reboot=k panic=1 pci=off ember_idle"}
    assert run("PUT", "/boot-source", json.dumps(boot)).returncode == 0
    workdir = Path(a.sock).parent
    (workdir / "d1.img").write_bytes(b"\0" * (1 << 20))
    (workdir / "d2.img").write_bytes(b"\0" * (3 << 20))
    drive = {"drive_id": "data", "is_root_device": False, "path_on_host": str(workdir / "d1.img")}
    assert run("PUT", "/drives/data", json.dumps(drive)).returncode == 0
    balloon = {"amount_mib": 0, "deflate_on_oom": True, "stats_polling_interval_s": 1}
    assert run("PUT", "/balloon", json.dumps(balloon)).returncode == 0
    refused = run("PUT", "/machine-config", '{"vcpu_count": 0, "mem_size_mib": 128}')
    assert refused.returncode == 1
    assert "machine-config.vcpu_count must be between 1 and 32, got 0" in refused.stderr
    assert run("PUT", "/actions", '{"action_type": "InstanceStart"}').returncode == 0
    state = run("GET", "/")
    assert state.returncode == 0 and json.loads(state.stdout)["state"] == "Running"
    # Generous: guests boot at emulated speed here, slower still while the
    # fuzzers and other guests share the two cores.
    deadline = time.monotonic() + 300
    while "Run /init as init process" not in a.console():
        assert time.monotonic() < deadline, a.console()
        time.sleep(1)
    # Firecracker's answers once running: FlushMetrics without metrics
    # writes nothing; MMDS without an interface to serve it has no store.
    assert run("PUT", "/actions", '{"action_type": "FlushMetrics"}').returncode == 0
    for args in (("GET", "/mmds"), ("PUT", "/mmds", '{"a": 1}')):
        refused = run(*args)
        assert refused.returncode == 1, refused
        assert "MMDS error: The MMDS data store is not initialized." in refused.stderr, refused
    swap = {"drive_id": "data", "path_on_host": str(workdir / "d2.img")}
    assert run("PATCH", "/drives/data", json.dumps(swap)).returncode == 0
    deadline = time.monotonic() + 120
    while "[vda] new size: 6144 512-byte logical blocks" not in a.console():
        assert time.monotonic() < deadline, a.console()[-2000:]
        time.sleep(0.5)
    assert run("PATCH", "/balloon", '{"amount_mib": 16}').returncode == 0
    deadline = time.monotonic() + 120
    while True:
        stats = run("GET", "/balloon/statistics")
        if stats.returncode == 0 and json.loads(stats.stdout)["actual_mib"] == 16:
            break
        assert time.monotonic() < deadline, stats.stdout + stats.stderr
        time.sleep(1)
    assert run("PATCH", "/vm", '{"state": "Paused"}').returncode == 0
    assert json.loads(run("GET", "/").stdout)["state"] == "Paused"
    assert run("PATCH", "/vm", '{"state": "Resumed"}').returncode == 0
    assert run("PUT", "/actions", '{"action_type": "SendCtrlAltDel"}').returncode == 0
    assert a.proc.wait(timeout=120) == EXIT_OK
    assert run("GET", "/").returncode == 2, "no socket once Ember has exited"


def raw_request(sock, method, path, body=None):
    """(status, headers by lower-case name, body text) of one request sent by
    hand: curl's helper above returns no headers."""
    data = b"" if body is None else json.dumps(body).encode()
    request = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
               "Connection: close\r\n\r\n").encode() + data
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall(request)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, text = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return int(lines[0].split()[1]), headers, text.decode()


@pytest.fixture
def netns():
    """A namespace with tap0 and tap1 for PUT /network-interfaces to open."""
    from test_net import add_tap, new_netns, sh
    name = new_netns("ember-api")
    try:
        add_tap(name, "tap0")
        add_tap(name, "tap1", host_ip="172.30.1.1")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def test_firecrackers_answers_before_the_start(api, ember, guest, netns):
    """What Firecracker answers (its api_server and rpc_interface) where Ember
    used to differ; the needles are Firecracker's own words. In a network
    namespace: a PUT of an interface opens its TAP."""
    a = api(prefix=("ip", "netns", "exec", netns))
    workdir = Path(a.sock).parent
    disk = workdir / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    root = {"drive_id": "root", "path_on_host": str(disk), "is_root_device": True}

    # A GET with a body, a PUT or PATCH without one, a PATCH that changes nothing.
    a.expect_fault("GET", "/machine-config", "GET request cannot have a body.", {})
    a.expect_fault("PUT", "/machine-config", "Empty PUT request.")
    a.expect_fault("PATCH", "/machine-config", "Empty PATCH request.")
    a.expect_fault("PATCH", "/machine-config", "Empty PATCH request.", {})
    a.expect_fault("PATCH", "/boot-source", "Invalid request method and/or path",
                   {"kernel_image_path": "x"})

    # Ids in paths: letters, digits and '_'.
    a.expect_fault("PUT", "/drives/root-fs", "API Resource IDs can only contain alphanumeric "
                   "characters and underscores.", {**root, "drive_id": "root-fs"})
    a.expect_fault("PUT", "/drives/", "The ID cannot be empty.", root)

    # Files are opened when the request comes.
    a.expect_fault("PUT", "/boot-source", "Boot source error: The kernel file cannot be opened: "
                   "No such file or directory (os error 2)",
                   {"kernel_image_path": "/nonexistent/vmlinux"})
    a.expect_fault("PUT", "/boot-source", "The initrd file cannot be opened due to invalid path "
                   "or invalid permissions. No such file or directory (os error 2)",
                   {"kernel_image_path": str(guest["vmlinux"]), "initrd_path": "/nonexistent/i"})
    assert a.request("PUT", "/boot-source", {"kernel_image_path": str(guest["vmlinux"])})[0] == 204
    a.expect_fault("PUT", "/boot-source", "The kernel command line is invalid: Inserting string "
                   "would make command line too long.",
                   {"kernel_image_path": str(guest["vmlinux"]), "boot_args": "a" * 2048})
    a.expect_fault("PUT", "/boot-source", "String contains a non-printable ASCII character.",
                   {"kernel_image_path": str(guest["vmlinux"]), "boot_args": "quiet\nx"})
    a.expect_fault("PUT", "/drives/root", "Error manipulating the backing file: No such file or "
                   "directory (os error 2) /nonexistent/disk.img",
                   {**root, "path_on_host": "/nonexistent/disk.img"})
    assert a.request("PUT", "/drives/root", root)[0] == 204
    a.expect_fault("PUT", "/drives/other", "A root block device already exists!",
                   {**root, "drive_id": "other"})

    # A guest MAC already in use; PATCHes of devices wait for the start.
    mac = "06:00:00:00:00:01"
    assert a.request("PUT", "/network-interfaces/eth0", {
        "iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": mac})[0] == 204
    a.expect_fault("PUT", "/network-interfaces/eth1", f"The MAC address is already in use: {mac}",
                   {"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": mac})
    a.expect_fault("PATCH", "/drives/root", NOT_SUPPORTED_BEFORE_START,
                   {"drive_id": "root", "path_on_host": str(disk)})
    a.expect_fault("PATCH", "/network-interfaces/eth0", NOT_SUPPORTED_BEFORE_START,
                   {"iface_id": "eth0"})

    # Log levels in any case.
    for level in ("debug", "WARN", "iNfO"):
        assert a.request("PUT", "/logger", {"level": level})[0] == 204, level
    # A logger without a level puts it back to Info, as Firecracker's.
    assert a.request("PUT", "/logger", {"level": "Off"})[0] == 204
    assert a.request("GET", "/quiet")[0] == 400
    assert a.request("PUT", "/logger", {"show_level": True})[0] == 204
    assert a.request("GET", "/loud")[0] == 400
    assert "/quiet" not in a.log() and "/loud" in a.log(), a.log()[-2000:]


    # Deprecated fields are taken, and the answer says so.
    vsock = {"guest_cid": 3, "uds_path": str(workdir / "v.sock")}
    status, headers, _ = raw_request(a.sock, "PUT", "/vsock", {"vsock_id": "root", **vsock})
    assert (status, headers.get("deprecation")) == (204, "true"), headers
    status, headers, _ = raw_request(a.sock, "PUT", "/vsock", vsock)
    assert status == 204 and "deprecation" not in headers, headers
    status, headers, _ = raw_request(a.sock, "PUT", "/machine-config", {
        "vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "None"})
    assert (status, headers.get("deprecation")) == (204, "true"), headers

    # GET /version: the Firecracker API level, which Kata wants at 0.21.1 or
    # more; GET /: Ember's own version as the build.
    version = a.request("GET", "/version")[1]["firecracker_version"]
    level = re.match(r"^(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$", version)
    assert level and tuple(map(int, level.groups()[:3])) >= (0, 21, 1), version
    info = a.request("GET", "/")[1]
    assert set(info) == {"id", "state", "vmm_version", "app_name"}, info
    assert (info["id"], info["state"]) == ("anonymous-instance", "Not started")
    own = subprocess.run([str(ember), "--version"], capture_output=True, text=True).stdout
    assert info["vmm_version"] in own, (info, own)

    # GET /vm/config: Firecracker's keys, null for what is not configured.
    config = a.request("GET", "/vm/config")[1]
    assert set(config) == {"balloon", "drives", "boot-source", "cpu-config", "logger",
                           "machine-config", "metrics", "mmds-config", "network-interfaces",
                           "vsock", "entropy", "pmem", "memory-hotplug"}, config
    assert config["balloon"] is None and config["entropy"] is None and config["pmem"] == []
    assert config["boot-source"] == {"kernel_image_path": str(guest["vmlinux"]),
                                     "initrd_path": None, "boot_args": None}
    assert config["drives"] == [{"drive_id": "root", "partuuid": None, "is_root_device": True,
                                 "cache_type": "Unsafe", "is_read_only": False,
                                 "path_on_host": str(disk), "rate_limiter": None,
                                 "io_engine": "Sync", "socket": None}]
    assert config["machine-config"]["huge_pages"] == "None"

    # The balloon takes free page hinting and reporting; a hinting run, which
    # Firecracker starts without a body, waits for the start.
    a.expect_fault("PATCH", "/balloon/hinting/start", NOT_SUPPORTED_BEFORE_START)
    a.expect_fault("PATCH", "/balloon/hinting/stop", NOT_SUPPORTED_BEFORE_START)
    a.expect_fault("GET", "/balloon/hinting/status", NOT_SUPPORTED_BEFORE_START)
    balloon = {"amount_mib": 0, "deflate_on_oom": False, "stats_polling_interval_s": 0,
               "free_page_hinting": True, "free_page_reporting": True}
    assert a.request("PUT", "/balloon", balloon)[0] == 204
    assert a.request("GET", "/balloon")[1] == balloon
    assert a.request("GET", "/vm/config")[1]["balloon"] == balloon

    # Each request logged at Info as Firecracker's API server logs it.
    log = a.log()
    for line in ['The API server received a Put request on "/drives/root" with body "{\\"drive_id',
                 'The API server received a Get request on "/vm/config".',
                 "The request was executed successfully. Status code: 204 No Content.",
                 "The request was executed successfully. Status code: 200 OK.",
                 "Received Error. Status code: 400 Bad Request. Message: Empty PUT request.",
                 "PUT /vsock: vsock_id field is deprecated."]:
        assert line in log, line

    # Last, as the log moves to a file: logger.module lets through only lines
    # from source files below the path (here the API layer's); a Rust
    # module path means nothing to Ember.
    a.expect_fault("PUT", "/logger", "not by Rust module", {"module": "vmm::devices"})
    modlog = workdir / "module.log"
    assert a.request("PUT", "/logger", {"log_path": str(modlog), "level": "Info",
                                        "show_log_origin": True, "module": "api/"})[0] == 204
    assert a.request("GET", "/machine-config")[0] == 200
    a.expect_fault("PUT", "/drives/x", "does not match", {"drive_id": "y", "path_on_host": "/x",
                                                          "is_root_device": False})
    # A logger without a module keeps the one set (Firecracker's rule).
    assert a.request("PUT", "/logger", {"level": "Debug"})[0] == 204
    assert a.request("GET", "/machine-config")[0] == 200
    lines = modlog.read_text().splitlines()
    assert lines, "the API layer's lines get through"
    assert all(re.search(r"\[(http_server|router|routes|api_metrics|vm_config_json)\.cc:\d+\]",
                         line) for line in lines), lines


@pytest.mark.usefixtures("kvm")
def test_firecrackers_rules_on_memory_and_unknown_fields(api, tmp_path):
    """Memory below the balloon's target is refused; fields Firecracker
    ignores (no deny_unknown_fields there) are ignored, and a body it does
    not read is not read."""
    a = api()
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    root = {"drive_id": "root", "path_on_host": str(disk), "is_root_device": True}
    assert a.request("PUT", "/balloon", {"amount_mib": 64, "deflate_on_oom": False})[0] == 204
    a.expect_fault("PATCH", "/machine-config", "The memory size (MiB) is smaller than the "
                   "previously set balloon device target size.", {"mem_size_mib": 32})
    a.expect_fault("PUT", "/machine-config", "The memory size (MiB) is smaller than the "
                   "previously set balloon device target size.",
                   {"vcpu_count": 1, "mem_size_mib": 63})
    assert a.request("GET", "/machine-config")[1]["mem_size_mib"] == 128

    limited = {**root, "rate_limiter": {"bandwidth": {"size": 1 << 20, "refill_time": 100,
                                                      "spare": 1}}}
    assert a.request("PUT", "/drives/root", limited)[0] == 204
    assert a.request("PUT", "/metrics", {"metrics_path": str(tmp_path / "metrics.json"),
                                         "spare": True})[0] == 204
    a.expect_fault("PATCH", "/balloon/hinting/start", NOT_SUPPORTED_BEFORE_START,
                   {"acknowledge_on_stop": False, "spare": 1})
    a.expect_fault("PATCH", "/balloon/hinting/stop", NOT_SUPPORTED_BEFORE_START, raw="garbage")
    a.expect_fault("PUT", "/drives/root", "unknown field 'spare'", {**root, "spare": 1})
    config = a.request("GET", "/vm/config")[1]
    assert config["drives"][0]["rate_limiter"]["bandwidth"]["size"] == 1 << 20, config


def test_a_snapshot_is_refused_after_machine_config(api, tmp_path):
    """As Firecracker: machine-config is boot-specific, the logger is not."""
    a = api()
    assert a.request("PUT", "/logger", {"level": "Info"})[0] == 204
    assert a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})[0] == 204
    a.expect_fault("PUT", "/snapshot/load", "Loading a microVM snapshot not allowed after "
                   "configuring boot-specific resources.",
                   {"snapshot_path": str(tmp_path / "state"), "mem_file_path": str(tmp_path / "m")})


def test_the_vm_prepared_before_the_start_follows_the_kernel_file(api, guest, tmp_path):
    """Ember loads the kernel and makes the vCPUs once the configuration
    names a kernel, before InstanceStart; a kernel file rewritten after that
    is read again (here: garbage, refused at the start), and a good one
    then starts."""
    kernel = tmp_path / "vmlinux"
    shutil.copyfile(guest["vmlinux"], kernel)
    time.sleep(0.1)  # older than a file-system clock tick: a rewrite shows
    a = api()
    assert a.request("PUT", "/boot-source", {"kernel_image_path": str(kernel),
                                             "boot_args": "console=ttyS0 reboot=k panic=1"})[0] == 204
    assert a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64})[0] == 204
    # Once for the boot source (128 MiB), again for the new memory size.
    wait_for_log(a, "64 MiB, 1 vCPUs, kernel loaded")

    # The prepared VM maps the kernel under a lease (root may lease any
    # file): the write waits until its pages are copied, and the VMM
    # prepares again at once or at the start.
    kernel.write_bytes(b"\xcc" * 4096)
    wait_for_log(a, "guest memory copied first")
    a.expect_fault("PUT", "/actions", "is neither an ELF vmlinux nor a bzImage",
                   {"action_type": "InstanceStart"})

    shutil.copyfile(guest["vmlinux"], kernel)
    assert a.request("PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
    wait_for_log(a, "first KVM_RUN")
    assert a.stop() == EXIT_SIGTERM


def wait_for_log(a, needle, timeout=30):
    deadline = time.monotonic() + timeout
    while needle not in a.log():
        assert time.monotonic() < deadline, (needle, a.log()[-2000:])
        time.sleep(0.05)
