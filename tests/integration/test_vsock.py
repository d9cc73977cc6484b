"""virtio-vsock with a real Linux guest, through Firecracker's Unix-socket
host side: the guest agent (ember-agent, started by busybox init) runs
commands for ember-exec; bulk data each way; many connections at once; a
guest program connecting to a host listener at <uds_path>_<port>; a host
client killed mid-transfer; and a snapshot restored three times side by
side with vsock_override, each clone running a new command, one connected
to while still paused."""

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import EXIT_OK, boot_config, is_pvm_host
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import total

AGENT_PORT = 1024
GUEST_CID = 3
# 64 MiB each way; on PVM hosts, whose guests run emulated (about 0.2 MiB/s
# through the agent), 8 MiB.
BULK = (8 if is_pvm_host() else 64) << 20


def exec_cmd(ember, uds, *cmd, stdin=None, timeout=300):
    """ember-exec --uds UDS -- CMD: (exit status, stdout bytes, stderr text)."""
    client = Path(ember).parent / "ember-exec"
    proc = subprocess.run([str(client), "--uds", str(uds), "--", *cmd], input=stdin,
                          capture_output=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def connect(uds, port, timeout=60):
    """A host connection to guest `port`: the CONNECT handshake, then the
    socket (a stream to the guest program)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(uds))
    s.sendall(f"CONNECT {port}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {line!r}")
        line += chunk
    assert line.startswith(b"OK "), line
    return s


def wait_for_agent(ember, uds, shell, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        status, out, err = exec_cmd(ember, uds, "true", timeout=60)
        if status == 0:
            return
        assert time.monotonic() < deadline, (status, err, shell.log()[-2000:])
        time.sleep(2)


def vsock_guest(ember, guest, workdir, uds, api=True):
    # 256 MiB: the guest's /tmp (half its memory) holds the BULK file.
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args(), mem_mib=256)
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    config["vsock"] = {"guest_cid": GUEST_CID, "uds_path": str(uds)}
    config["metrics"] = {"metrics_path": str(Path(workdir) / "metrics.json")}
    return GuestShell(ember, workdir, config, api=api)


def test_agent_runs_commands_and_data_crosses_both_ways(ember, guest, tmp_path):
    uds = tmp_path / "v.sock"
    shell = vsock_guest(ember, guest, tmp_path, uds)
    try:
        shell.wait_ready()
        wait_for_agent(ember, uds, shell)

        # Exit statuses, output and a signal.
        assert exec_cmd(ember, uds, "true")[0] == 0
        assert exec_cmd(ember, uds, "false")[0] == 1
        status, out, _ = exec_cmd(ember, uds, "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (status, out) == (3, b"out\n")
        assert exec_cmd(ember, uds, "sh", "-c", "kill -9 $$")[0] == 128 + 9
        status, _, err = exec_cmd(ember, uds, "/no/such/program")
        assert status != 0 and "No such file" in err, err

        # 10 MiB to stdout, and BULK each way, checksummed. The agent runs
        # beside each command: on PVM hosts this lost data (read as zeros)
        # until the guest kernel kept glibc off the AVX registers it cannot
        # switch between processes (docs/pvm-guest.md).
        status, out, _ = exec_cmd(ember, uds, "dd", "if=/dev/zero", "bs=1M", "count=10")
        assert status == 0 and out == b"\0" * (10 << 20)
        # The agent passes on what the guest kernel gave init.
        status, out, _ = exec_cmd(ember, uds, "sh", "-c", "echo $GLIBC_TUNABLES")
        assert status == 0 and (b"-AVX2" in out) == is_pvm_host(), out
        big = os.urandom(BULK)
        status, out, err = exec_cmd(ember, uds, "md5sum", stdin=big, timeout=900)
        assert status == 0 and out.split()[0].decode() == hashlib.md5(big).hexdigest(), \
            (status, out[:40], err, shell.log()[-3000:])
        # Bytes the counters must show at least, each way.
        expect = {"rx_bytes_count": BULK, "tx_bytes_count": 10 << 20}
        # One random MiB repeated: the emulated guest's urandom makes about
        # 20 KiB/s on a loaded PVM host.
        shell.check("dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null && i=0 &&"
                    f" (while [ $i -lt {BULK >> 20} ]; do cat /tmp/r || exit 1; i=$((i+1)); done)"
                    " > /tmp/big"
                    " && rm /tmp/r", timeout=600)
        digest = shell.check("md5sum /tmp/big").split()[0]
        status, out, _ = exec_cmd(ember, uds, "cat", "/tmp/big", timeout=900)
        assert status == 0 and len(out) == BULK and hashlib.md5(out).hexdigest() == digest, \
            (status, len(out))
        expect["tx_bytes_count"] += len(out)
        shell.check("rm /tmp/big")

        # 100 connections open at once to the agent, then closed.
        conns = [connect(uds, AGENT_PORT) for _ in range(100)]
        for c in conns:
            c.close()
        assert exec_cmd(ember, uds, "true")[0] == 0, "the agent serves on"

        # Nobody listens on port 4242: the host socket is closed.
        with pytest.raises(ConnectionError):
            connect(uds, 4242)

        # A guest program connects to the host: CID 2, port 5000, which
        # Ember forwards to a listener at <uds_path>_5000.
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(f"{uds}_5000")
        listener.listen(1)
        listener.settimeout(120)
        shell.write_file("/tmp/hello", b"hello host\n")
        reply = {}

        def serve():
            c, _ = listener.accept()
            data = b""
            while chunk := c.recv(4096):
                data += chunk
            reply["got"] = data
            c.sendall(b"hello guest\n")
            c.close()

        t = threading.Thread(target=serve)
        t.start()
        out = shell.check("ember-usercheck vsock 2 5000 < /tmp/hello")
        t.join(timeout=60)
        assert reply.get("got") == b"hello host\n"
        assert out == "hello guest\n"
        listener.close()

        # The host client is killed mid-transfer: the guest side sees the
        # reset and the agent ends the command.
        client = subprocess.Popen([str(Path(ember).parent / "ember-exec"), "--uds", str(uds),
                                   "--", "cat", "/dev/zero"], stdout=subprocess.PIPE)
        assert client.stdout.read(1 << 20) == b"\0" * (1 << 20)
        client.kill()
        client.wait()
        deadline = time.monotonic() + 60
        while shell.check("pidof cat || true").strip():
            assert time.monotonic() < deadline, "the agent never ended cat"
            time.sleep(1)

        status, reply = shell.request("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/x"})
        assert status == 400 and "not supported after starting the microVM. Set vsock" in \
            reply["fault_message"]
        assert shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
        # Counts are changes since the line before: every line adds up.
        metrics = tmp_path / "metrics.json"
        moved = {f: total(metrics, "vsock", f)
                 for f in ("rx_bytes_count", "tx_bytes_count", "conns_added")}
        assert all(moved[f] >= n for f, n in expect.items()), (moved, expect)
        assert moved["rx_bytes_count"] > 0
        assert moved["conns_added"] >= 100
        assert shell.shutdown() == EXIT_OK, shell.log()
    finally:
        shell.close()
    assert not uds.exists(), "Ember removes its socket"


def test_snapshot_with_the_agent_restores_side_by_side(ember, guest, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    uds = first / "v.sock"
    shell = vsock_guest(ember, guest, first, uds)
    files = {"state": first / "vm.snap", "mem": first / "vm.mem"}
    try:
        shell.wait_ready()
        wait_for_agent(ember, uds, shell)
        assert shell.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
        assert shell.request("PUT", "/snapshot/create", {
            "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})[0] == 204
    finally:
        shell.close()

    clones = []

    def load(name, resume):
        d = tmp_path / name
        d.mkdir()
        clone = GuestShell(ember, d, api=True)
        clones.append((clone, d / "v.sock"))
        status, reply = clone.request("PUT", "/snapshot/load", {
            "snapshot_path": str(files["state"]),
            "mem_backend": {"backend_type": "File", "backend_path": str(files["mem"])},
            "vsock_override": {"uds_path": str(d / "v.sock")}, "resume_vm": resume})
        assert status == 204, (reply, clone.log())
        return clone, d / "v.sock"

    try:
        load("a", True)
        load("b", True)
        # A host connection made while a restored guest is still paused
        # waits for the guest's ack of TRANSPORT_RESET (its event buffer
        # back), and must go through once the guest runs: the ack used to go
        # unheard, and the host program read EOF when the request timed out.
        held, held_uds = load("held", False)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(60)
            s.connect(str(held_uds))
            s.sendall(f"CONNECT {AGENT_PORT}\n".encode())
            time.sleep(0.5)  # Ember takes the line while the guest is paused
            assert held.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
            line = s.makefile("rb").readline()
            assert line.startswith(b"OK "), (line, held.log()[-2000:])
        for clone, clone_uds in clones:
            # The guest saw TRANSPORT_RESET; the agent listens again.
            wait_for_agent(ember, clone_uds, clone, timeout=120)
            status, out, _ = exec_cmd(ember, clone_uds, "echo", f"clone {clone_uds.parent.name}")
            assert (status, out) == (0, f"clone {clone_uds.parent.name}\n".encode())
        for clone, _ in clones:
            clone.proc.send_signal(signal.SIGTERM)
            clone.proc.wait(timeout=60)
    finally:
        for clone, _ in clones:
            clone.close()
