"""Snapshots of a real Linux guest: boot, pause, snapshot, load in a new
Ember process, resume, and the guest goes on (its kernel takes
Ctrl-Alt-Del from the restored keyboard controller and writes its reboot
messages on the restored console); several restores of one snapshot side
by side; and bad input that must leave the new process unconfigured."""

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import EXIT_OK, NOT_SUPPORTED_AFTER_START, need_kvm
from test_api import Api

IDLE_ARGS = "console=ttyS0 reboot=k panic=1 pci=off ember_idle"


@pytest.fixture(scope="module")
def snapshot(ember, guest, tmp_path_factory):
    """One booted guest, paused and snapshotted; its files."""
    need_kvm()
    d = tmp_path_factory.mktemp("snap")
    a = Api(ember, d)
    try:
        assert a.request("PUT", "/boot-source", {
            "kernel_image_path": str(guest["vmlinux"]),
            "initrd_path": str(guest["initramfs.cpio"]), "boot_args": IDLE_ARGS})[0] == 204
        assert a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})[0] == 204
        # Virtio devices too: their queues and state are in the snapshot, and
        # restoring them reads guest memory from the VMM thread.
        assert a.request("PUT", "/balloon", {"amount_mib": 0, "deflate_on_oom": False,
                                             "stats_polling_interval_s": 1})[0] == 204
        data = d / "data.img"
        data.write_bytes(b"\0" * (1 << 20))
        assert a.request("PUT", "/drives/data", {"drive_id": "data", "path_on_host": str(data),
                                                 "is_root_device": False,
                                                 "is_read_only": True})[0] == 204
        a.expect_fault("PUT", "/snapshot/create", "not supported before starting the microVM",
                       {"snapshot_path": str(d / "x"), "mem_file_path": str(d / "y")})
        assert a.request("PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
        deadline = time.monotonic() + 300
        while "Run /init as init process" not in a.console():
            assert time.monotonic() < deadline, a.console()
            time.sleep(0.5)
        time.sleep(2)  # the keyboard is long probed by now; init spins
        files = {"state": d / "vm.snap", "mem": d / "vm.mem"}
        a.expect_fault("PUT", "/snapshot/create", "pause the microVM first",
                       {"snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})
        assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
        # A Diff without track_dirty_pages holds the pages in host memory
        # (mincore, under the vmm filter), as Firecracker's, and the pages
        # of a kernel or initrd mapped from its file, cached or not: their
        # cache is dropped first. A test below restores it.
        for image in (guest["vmlinux"], guest["initramfs.cpio"]):
            fd = os.open(image, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        resident = {"state": d / "resident.snap", "mem": d / "resident.mem"}
        assert a.request("PUT", "/snapshot/create", {
            "snapshot_path": str(resident["state"]), "mem_file_path": str(resident["mem"]),
            "snapshot_type": "Diff"})[0] == 204, a.log()
        assert resident["mem"].stat().st_size == 128 << 20
        assert 0 < resident["mem"].stat().st_blocks * 512 <= 128 << 20
        assert a.request("PUT", "/snapshot/create", {
            "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"]),
            "snapshot_type": "Full"})[0] == 204
        assert files["mem"].stat().st_size == 128 << 20
        assert "snapshot created" in a.log()
    finally:
        a.stop()
    return files


def load(a, files, resume=True, **extra):
    body = {"snapshot_path": str(files["state"]),
            "mem_backend": {"backend_type": "File", "backend_path": str(files["mem"])},
            "resume_vm": resume, **extra}
    return a.request("PUT", "/snapshot/load", body)


def reboot_and_wait(a):
    """The restored guest takes Ctrl-Alt-Del and reboots: Ember exits 0."""
    assert a.request("PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0] == 204, a.log()
    assert a.proc.wait(timeout=120) == EXIT_OK, a.log()
    assert "reboot: Restarting system" in a.console(), a.console()[-2000:]


def test_a_loaded_snapshot_goes_on(ember, snapshot, tmp_path):
    a = Api(ember, tmp_path)
    status, reply = load(a, snapshot)
    assert status == 204, reply
    assert a.request("GET", "/")[1]["state"] == "Running"
    config = a.request("GET", "/vm/config")[1]
    assert config["machine-config"]["mem_size_mib"] == 128
    assert "Run /init" not in a.console(), "no second boot: the kernel goes on where it was"
    a.expect_fault("PUT", "/snapshot/load", NOT_SUPPORTED_AFTER_START,
                   {"snapshot_path": str(snapshot["state"]), "mem_file_path": str(snapshot["mem"])})
    # The restored virtio devices still work with the guest's drivers: the
    # block device's config interrupt reaches virtio_blk (a new size), and
    # the balloon inflates and keeps reporting statistics from the buffer
    # the guest gave it before the snapshot.
    bigger = tmp_path / "bigger.img"
    bigger.write_bytes(b"\0" * (2 << 20))
    assert a.request("PATCH", "/drives/data", {"drive_id": "data",
                                               "path_on_host": str(bigger)})[0] == 204
    assert a.request("PATCH", "/balloon", {"amount_mib": 16})[0] == 204
    deadline = time.monotonic() + 120
    while True:
        status, stats = a.request("GET", "/balloon/statistics")
        if ("[vda] new size: 4096" in a.console() and status == 200
                and stats.get("actual_mib") == 16):
            break
        assert time.monotonic() < deadline, (stats, a.console()[-1500:])
        time.sleep(0.5)
    assert stats["free_memory"] > 0
    reboot_and_wait(a)


def test_a_diff_of_the_resident_pages_is_a_whole_memory_file(ember, snapshot, tmp_path):
    """The holes of a Diff taken without dirty tracking are pages never
    touched, which read as zeros (the kernel's and initrd's pages, mapped
    from their files, are all in it): the guest restored from it alone
    goes on, and reboots through code it had not run before."""
    d = snapshot["state"].parent
    a = Api(ember, tmp_path)
    status, reply = load(a, {"state": d / "resident.snap", "mem": d / "resident.mem"})
    assert status == 204, reply
    reboot_and_wait(a)


def test_loaded_paused_then_resumed(ember, snapshot, tmp_path):
    a = Api(ember, tmp_path)
    assert load(a, snapshot, resume=False)[0] == 204
    assert a.request("GET", "/")[1]["state"] == "Paused"
    # A FIFO named for the new memory file is refused at once (nobody reads
    # it), not waited on; the VM goes on.
    os.mkfifo(tmp_path / "fifo")
    a.expect_fault("PUT", "/snapshot/create", "fifo is not a regular file", {
        "snapshot_path": str(tmp_path / "s.snap"), "mem_file_path": str(tmp_path / "fifo")})
    assert a.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
    reboot_and_wait(a)


def test_clock_realtime_is_applied_or_refused_for_a_clock_without_one(ember, snapshot, tmp_path):
    """snapshot/load.clock_realtime hands the saved real time to KVM_SET_CLOCK
    (which then advances kvmclock by the time since the save); a snapshot
    whose host's KVM recorded no real time is refused, not loaded quietly
    without it."""
    a = Api(ember, tmp_path)
    status, reply = load(a, snapshot, clock_realtime=True)
    if status == 400:
        assert "has no real time" in reply["fault_message"], reply
        assert a.request("GET", "/")[1]["state"] == "Not started"
        return
    assert status == 204, reply
    reboot_and_wait(a)


def test_many_restores_of_one_snapshot_side_by_side(ember, snapshot, tmp_path):
    vms = []
    for i in range(3):
        d = tmp_path / str(i)
        d.mkdir()
        vms.append(Api(ember, d))
    try:
        for a in vms:
            assert load(a, snapshot)[0] == 204, a.log()
        for a in vms:
            reboot_and_wait(a)
    finally:
        for a in vms:
            a.stop()
    # MAP_PRIVATE: the guests' writes never reached the shared memory file.
    assert snapshot["mem"].stat().st_size == 128 << 20


def copies(files, d):
    """The snapshot's files copied into `d`, to be written there."""
    out = {}
    for name, path in files.items():
        out[name] = d / path.name
        out[name].write_bytes(path.read_bytes())
    return out


def test_a_memory_file_rewritten_under_a_restored_guest_is_copied_first(ember, snapshot,
                                                                        tmp_path):
    """Guest memory maps the memory file private, under a lease
    (src/common/file_lease.h): a program rewriting the file (here cut to
    half and filled with int3 bytes) waits until Ember has copied guest
    memory, and the guest goes on, unharmed."""
    files = copies(snapshot, tmp_path)
    a = Api(ember, tmp_path)
    try:
        assert load(a, files)[0] == 204, a.log()
        started = time.monotonic()
        with open(files["mem"], "wb") as f:  # the open waits for Ember
            f.write(b"\xcc" * (64 << 20))
        # The kernel holds a writer for the lease-break time (45 s) when
        # the leaseholder never lets go.
        assert time.monotonic() - started < 20, "Ember did not let the writer go"
        reboot_and_wait(a)
        assert "131072 KiB in guest memory copied first" in a.log()
    finally:
        a.stop()


def leased(path):
    """Whether a read lease (/proc/locks) is held on the file at `path`."""
    st = path.stat()
    ino = f":{st.st_ino} "
    return any(line.split()[1] == "LEASE" and ino in line
               for line in Path("/proc/locks").read_text().splitlines())


@pytest.mark.parametrize("case", ["leased", "unleased", "merged"])
def test_a_snapshot_over_the_memory_file_it_was_loaded_from(ember, snapshot, tmp_path, case):
    """A restored VM snapshotted onto the very memory file it maps: Ember
    copies guest memory before it truncates the file (its own write would
    otherwise wait out its own lease or, with none, cut the pages from
    under the guest and write zeros for them), and both the VM and the new
    snapshot go on. No lease where the file is open for writing at the
    load, as it is here, for a moment, in the unleased case. Merged: with
    --merge-guest-memory the copy is advised MADV_MERGEABLE, under the VMM
    thread's seccomp filter."""
    files = copies(snapshot, tmp_path)
    args = ["--merge-guest-memory"] if case == "merged" else []
    a = Api(ember, tmp_path, args=args)
    try:
        with open(files["mem"], "r+b" if case == "unleased" else "rb"):
            status, reply = load(a, files)
        if status != 204 and "KSM" in str(reply):
            pytest.skip("the host kernel has no KSM")
        assert status == 204, a.log()
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                            text=True).stdout.strip()
        if case != "unleased" and fs not in ("ext2/ext3", "xfs", "btrfs", "tmpfs", "f2fs"):
            pytest.skip(f"{fs}: Ember takes no lease there (file_lease.h)")
        assert leased(files["mem"]) == (case != "unleased"), fs
        assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
        started = time.monotonic()
        assert a.request("PUT", "/snapshot/create", {
            "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})[0] == 204
        assert time.monotonic() - started < 20, "the VMM waited out its own lease"
        assert a.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
        reboot_and_wait(a)
        assert "in guest memory copied first" in a.log()
    finally:
        a.stop()
    again = tmp_path / "again"
    again.mkdir()
    b = Api(ember, again)
    try:
        assert load(b, files)[0] == 204, b.log()
        reboot_and_wait(b)
    finally:
        b.stop()


def test_a_working_set_recorded_on_a_restored_vm_is_loaded_first(ember, snapshot, tmp_path):
    """Ember's extension (docs/working-set.md), under the real filters: the
    pages a restored guest touched are recorded while it runs, a later load
    maps them before the first KVM_RUN and the guest goes on, and a set
    recorded for another snapshot is refused."""
    ws = tmp_path / "vm.ws"
    other = {"state": tmp_path / "other.snap", "mem": tmp_path / "other.mem"}
    dirs = [tmp_path / name for name in ("record", "prefetch", "other")]
    for d in dirs:
        d.mkdir()
    a = Api(ember, dirs[0])
    try:
        assert load(a, snapshot)[0] == 204
        time.sleep(1)
        status, reply = a.request("PUT", "/snapshot/working-set", {
            "snapshot_path": str(snapshot["state"]), "working_set_path": str(ws)})
        assert status == 204, (reply, a.log()[-1500:])
        assert ws.stat().st_size > 0
        assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204, a.log()[-1500:]
        assert a.request("PUT", "/snapshot/create", {"snapshot_path": str(other["state"]),
                                                     "mem_file_path": str(other["mem"])})[0] == 204
    finally:
        a.stop()

    b = Api(ember, dirs[1])
    try:
        status, reply = load(b, snapshot, working_set_path=str(ws))
        assert status == 204, (reply, b.log()[-1500:])
        assert "working set 0.000" not in b.log(), "the pages were mapped"
        reboot_and_wait(b)
    finally:
        b.stop()

    c = Api(ember, dirs[2])
    try:
        c.expect_fault("PUT", "/snapshot/load", "recorded for another snapshot", {
            "snapshot_path": str(other["state"]), "working_set_path": str(ws), "resume_vm": True,
            "mem_backend": {"backend_type": "File", "backend_path": str(other["mem"])}})
    finally:
        c.stop()


def corrupt(path, out, change):
    data = bytearray(path.read_bytes())
    change(data)
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("case", ["truncated", "flipped", "version", "empty", "missing state",
                                  "mem too short", "missing mem", "uffd", "override", "both mem",
                                  "no mem", "fifo state", "fifo mem", "uffd never accepts"])
def test_bad_snapshots_are_refused_and_leave_ember_unconfigured(ember, snapshot, tmp_path, case):
    state, mem = snapshot["state"], snapshot["mem"]
    body = {"snapshot_path": str(state),
            "mem_backend": {"backend_type": "File", "backend_path": str(mem)}}
    needle = {
        "truncated": "truncated or extended", "flipped": "checksum mismatch",
        "version": "version 7", "empty": "not an Ember snapshot",
        "missing state": "/nonexistent/vm.snap", "mem too short": "the memory file is",
        "missing mem": "/nonexistent/vm.mem", "uffd": "connecting to the page-fault handler",
        "override": "no network interface 'eth9'",
        "both mem": "exactly one of mem_backend and mem_file_path",
        "no mem": "exactly one of mem_backend and mem_file_path",
        # A FIFO would hold a plain open until a writer came.
        "fifo state": "is not a regular file", "fifo mem": "is not a regular file",
        "uffd never accepts": "connecting to the page-fault handler"}[case]
    held = []  # sockets kept open until the load is answered
    if case == "truncated":
        body["snapshot_path"] = str(corrupt(state, tmp_path / "s", lambda d: d.__delitem__(slice(-100, None))))
    elif case == "flipped":
        body["snapshot_path"] = str(corrupt(state, tmp_path / "s", lambda d: d.__setitem__(200, d[200] ^ 1)))
    elif case == "version":
        body["snapshot_path"] = str(corrupt(state, tmp_path / "s", lambda d: d.__setitem__(8, 7)))
    elif case == "empty":
        (tmp_path / "s").write_bytes(b"")
        body["snapshot_path"] = str(tmp_path / "s")
    elif case == "missing state":
        body["snapshot_path"] = "/nonexistent/vm.snap"
    elif case == "mem too short":
        with open(mem, "rb") as f:
            (tmp_path / "m").write_bytes(f.read(1 << 20))
        body["mem_backend"]["backend_path"] = str(tmp_path / "m")
    elif case == "missing mem":
        body["mem_backend"]["backend_path"] = "/nonexistent/vm.mem"
    elif case == "uffd":
        body["mem_backend"] = {"backend_type": "Uffd", "backend_path": str(tmp_path / "nobody.sock")}
    elif case == "override":
        body["network_overrides"] = [{"iface_id": "eth9", "host_dev_name": "tap9"}]
    elif case == "both mem":
        body["mem_file_path"] = str(mem)
    elif case == "no mem":
        del body["mem_backend"]
    elif case == "fifo state":
        os.mkfifo(tmp_path / "f")
        body["snapshot_path"] = str(tmp_path / "f")
    elif case == "fifo mem":
        os.mkfifo(tmp_path / "f")
        body["mem_backend"]["backend_path"] = str(tmp_path / "f")
    elif case == "uffd never accepts":
        # A handler that listens and never accepts, its backlog full: a
        # blocking connect would hold the VMM thread for good.
        path = str(tmp_path / "h.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(0)
        held.append(listener)
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            held.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        body["mem_backend"] = {"backend_type": "Uffd", "backend_path": path}
    a = Api(ember, tmp_path)
    try:
        a.expect_fault("PUT", "/snapshot/load", needle, body)
        assert a.request("GET", "/")[1]["state"] == "Not started", "never half-restored"
    finally:
        a.stop()
        for s in held:
            s.close()


def test_load_after_configuration_is_refused(ember, guest, snapshot, tmp_path):
    a = Api(ember, tmp_path)
    try:
        assert a.request("PUT", "/boot-source", {"kernel_image_path": str(guest["vmlinux"])})[0] == 204
        a.expect_fault("PUT", "/snapshot/load", "has not been configured",
                       {"snapshot_path": str(snapshot["state"]),
                        "mem_file_path": str(snapshot["mem"])})
    finally:
        a.stop()


# A guest process that counts, one a second, with shell builtins only (one
# exec a second would cost the emulated guest of a PVM host dearly). `read
# -t 1` on a FIFO nobody writes is its clock.
COUNTER = ("mkfifo /tmp/tick && (exec 3<>/tmp/tick; i=0; while :; do i=$((i+1)); "
           "echo $i > /tmp/count; read -t 1 _ <&3; done) > /dev/null 2>&1 &")


def guest_count(shell):
    # A builtin read, retried while the counter is between truncate and
    # write, or has not written its first count yet (no file: ash's error
    # goes to the group's stderr, not into the answer).
    status, out = shell.run(
        "c=; while [ -z \"$c\" ]; do { read -r c < /tmp/count; } 2>/dev/null; done; echo $c")
    if status == 0:
        return int(out)
    raise AssertionError(f"reading the guest's counter failed: {status} {out!r}\n{shell.log()}")


def wait_counting(shell, above):
    """Waits until the guest's counter passes `above`; returns its value."""
    deadline = time.monotonic() + 120
    while (n := guest_count(shell)) <= above:
        assert time.monotonic() < deadline, f"the counter stays at {n}"
        time.sleep(1)
    return n


def test_a_restored_guest_goes_on_counting_and_pinging_on_its_tap_or_another(
        ember, guest, tmp_path):
    """A guest process keeps its count across a restore (it goes on, it
    does not start again), and virtio-net survives the snapshot: the
    restored guest pings the host and answers its ping, first on the TAP it
    had, then, restored from a Diff snapshot laid over the Full one, on
    another TAP (network_overrides). The last restore ends with
    Ctrl-Alt-Del, which busybox init turns into a clean shutdown."""
    from guest_shell import GuestShell, shell_boot_args
    from test_net import GUEST_IP, GUEST_MAC, HOST_IP, add_tap, new_netns, sh
    ns_name = new_netns("ember-snap")
    ns = ("ip", "netns", "exec", ns_name)
    try:
        def pings(shell):
            # The host first: on another TAP its MAC is new to the guest,
            # which learns it from the host's ARP request.
            result = sh(*ns, "ping", "-c", "2", "-W", "5", GUEST_IP, check=False)
            assert result.returncode == 0, result.stdout + shell.log()
            assert "1 packets received" in shell.check(f"ping -c 1 -W 5 {HOST_IP}")

        def restored(workdir, files, **extra):
            workdir.mkdir()
            shell = GuestShell(ember, workdir, api=True, prefix=ns)
            status, reply = shell.request("PUT", "/snapshot/load", {
                "snapshot_path": str(files["state"]),
                "mem_backend": {"backend_type": "File", "backend_path": str(files["mem"])},
                "resume_vm": True, **extra})
            assert status == 204, (reply, shell.log())
            return shell

        add_tap(ns_name, "tap0")
        d = tmp_path / "first"
        d.mkdir()
        config = {
            "boot-source": {"kernel_image_path": str(guest["vmlinux"]), "boot_args":
                            shell_boot_args() + f" ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off"},
            "drives": [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                        "is_root_device": True, "is_read_only": True}],
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                    "guest_mac": GUEST_MAC}],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 128, "track_dirty_pages": True}}
        a = GuestShell(ember, d, config, api=True, prefix=ns)
        try:
            a.wait_ready()
            pings(a)
            a.check(COUNTER)
            at_full = wait_counting(a, 5)
            assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
            files = {"state": d / "vm.snap", "mem": d / "vm.mem"}
            assert a.request("PUT", "/snapshot/create", {
                "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})[0] == 204
            # A Diff snapshot on top: only the pages written since the Full one.
            assert a.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
            at_diff = wait_counting(a, at_full)
            assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
            diff = {"state": d / "diff.snap", "mem": d / "diff.mem"}
            assert a.request("PUT", "/snapshot/create", {
                "snapshot_path": str(diff["state"]), "mem_file_path": str(diff["mem"]),
                "snapshot_type": "Diff"})[0] == 204
            merged = d / "merged.mem"
            merged.write_bytes(files["mem"].read_bytes())
            subprocess.run([str(Path(ember).parent / "ember-snapshot-rebase"), "--base-file",
                            str(merged), "--diff-file", str(diff["mem"])], check=True)
            # A Diff into a file of the VM's size merges into it, as
            # Firecracker's: nothing was written since, so it stays whole.
            before = merged.read_bytes()
            assert a.request("PUT", "/snapshot/create", {
                "snapshot_path": str(d / "empty.snap"), "mem_file_path": str(merged),
                "snapshot_type": "Diff"})[0] == 204
            after = merged.read_bytes()
            changed = [hex(at) for at in range(0, len(before), 4096)
                       if before[at:at + 4096] != after[at:at + 4096]]
            assert not changed, f"guest pages changed while paused: {changed[:16]}"
        finally:
            a.close()
        st = diff["mem"].stat()
        assert st.st_size == 128 << 20
        assert 0 < st.st_blocks * 512 < (16 << 20), "a diff holds only the pages written since"
        layered = {"state": diff["state"], "mem": merged}

        b = restored(tmp_path / "second", files)
        try:
            n = guest_count(b)
            # The count goes on from where the snapshot left it (not from 1).
            assert at_full <= n < at_diff + 60, (at_full, n)
            wait_counting(b, n)
            pings(b)
        finally:
            b.close()

        sh(*ns, "ip", "link", "del", "tap0")
        add_tap(ns_name, "tap1")
        c = restored(tmp_path / "third", layered,
                     network_overrides=[{"iface_id": "eth0", "host_dev_name": "tap1"}])
        try:
            assert c.request("GET", "/vm/config")[1]["network-interfaces"][0]["host_dev_name"] == "tap1"
            n = guest_count(c)
            assert at_diff <= n < at_diff + 60, (at_diff, n)
            wait_counting(c, n)
            pings(c)
            assert c.ctrl_alt_del() == EXIT_OK, c.log()
        finally:
            c.close()
    finally:
        sh("ip", "netns", "del", ns_name, check=False)


@contextlib.contextmanager
def uffd_loaded(ember, workdir, files):
    """A new Ember in `workdir` that loaded the snapshot `files` through
    ember-uffd-handler (resumed): (the Api, the line with the region list
    the handler got). The handler has served its first page; both go
    when the block ends."""
    sock = Path(workdir) / "uffd.sock"
    handler = subprocess.Popen(
        [str(Path(ember).parent / "ember-uffd-handler"), str(sock), str(files["mem"])],
        stdout=subprocess.PIPE, text=True)
    a = None
    try:
        assert "listening" in handler.stdout.readline()
        a = Api(ember, workdir)
        status, reply = a.request("PUT", "/snapshot/load", {
            "snapshot_path": str(files["state"]),
            "mem_backend": {"backend_type": "Uffd", "backend_path": str(sock)},
            "resume_vm": True})
        assert status == 204, reply
        regions = handler.stdout.readline()
        assert "got the userfaultfd" in regions, regions
        # Restoring the devices read guest memory: the handler served those
        # pages (on PVM the only ones it gets).
        assert "first page served" in handler.stdout.readline()
        yield a, regions
    finally:
        if a is not None:
            a.proc.kill()
            a.proc.wait()
        handler.kill()
        handler.wait()


def test_uffd_backend_hands_memory_to_the_example_handler(ember, snapshot, tmp_path):
    """mem_backend Uffd: Ember registers guest memory with a userfaultfd and
    sends it, with the region list, to ember-uffd-handler, which fills
    pages from the memory file. On PVM hosts the vCPU never reaches the
    handler (KVM's software MMU does not wait for a userfaultfd page): there
    the test checks the handover and the pages Ember's VMM thread touches;
    on hardware KVM the guest must go on."""
    from conftest import is_pvm_host
    with uffd_loaded(ember, tmp_path, snapshot) as (a, regions):
        assert '"size":134217728' in regions, regions
        if not is_pvm_host():
            reboot_and_wait(a)
