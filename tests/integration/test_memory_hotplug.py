"""Memory hotplug (virtio-mem, Firecracker's /hotplug/memory): checked at
the PUT with Firecracker's rules, written back by GET /vm/config, its
status and size only for a running VM; with a real guest, memory plugged
on request shows up in the guest, goes back to the host when unplugged,
and survives a snapshot with what the guest wrote there."""

import time
from pathlib import Path

import pytest

from conftest import EXIT_OK, NOT_SUPPORTED_BEFORE_START, boot_config
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import total
from test_api import Api


def test_memory_hotplug_is_checked_at_the_put(ember, tmp_path):
    a = Api(ember, tmp_path)
    try:
        a.expect_fault("PUT", "/hotplug/memory", "memory-hotplug.total_size_mib is required",
                       {"block_size_mib": 2})
        a.expect_fault("PUT", "/hotplug/memory", "block_size_mib 3 must be a power of 2",
                       {"total_size_mib": 1024, "block_size_mib": 3})
        a.expect_fault("PUT", "/hotplug/memory", "slot_size_mib 64 must be at least 128",
                       {"total_size_mib": 1024, "slot_size_mib": 64})
        a.expect_fault("PUT", "/hotplug/memory",
                       "total_size_mib 100 must be a non-zero multiple of slot_size_mib (128)",
                       {"total_size_mib": 100})
        assert a.request("PUT", "/hotplug/memory", {"total_size_mib": 512})[0] == 204
        config = a.request("GET", "/vm/config")[1]
        assert config["memory-hotplug"] == {"total_size_mib": 512, "slot_size_mib": 128,
                                            "block_size_mib": 2}, config
        # As in Firecracker, the status and the size are the running VM's.
        a.expect_fault("GET", "/hotplug/memory", NOT_SUPPORTED_BEFORE_START)
        a.expect_fault("PATCH", "/hotplug/memory", NOT_SUPPORTED_BEFORE_START,
                       {"requested_size_mib": 128})
        a.expect_fault("PATCH", "/hotplug/memory", "requested_size_mib must be an integer",
                       {"requested_size_mib": "128"})
        a.expect_fault("PUT", "/snapshot/load", "has not been configured",
                       {"snapshot_path": str(tmp_path / "s"), "mem_backend": {
                           "backend_type": "File", "backend_path": str(tmp_path / "m")}})
    finally:
        a.stop()


def wait_plugged(shell, mib, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status, body = shell.request("GET", "/hotplug/memory")
        assert status == 200, body
        if body["plugged_size_mib"] == mib:
            return body
        assert time.monotonic() < deadline, f"still {body} after {timeout} s"
        time.sleep(0.5)


def vm_rss_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])


def guest_mem_total_kib(shell):
    line = shell.check("grep MemTotal /proc/meminfo")
    return int(line.split()[1])


def hotplug_config(guest, tmp_path):
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args())
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    config["memory-hotplug"] = {"total_size_mib": 512}
    config["metrics"] = {"metrics_path": str(tmp_path / "metrics.json")}
    return config


@pytest.mark.usefixtures("kvm")
def test_the_guest_plugs_what_is_asked_and_gives_it_back(ember, guest, tmp_path):
    config = hotplug_config(guest, tmp_path)
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        assert "memhp_default_state=online_movable" in shell.check("cat /proc/cmdline")
        before = guest_mem_total_kib(shell)
        status = wait_plugged(shell, 0)
        assert status == {"total_size_mib": 512, "slot_size_mib": 128, "block_size_mib": 2,
                          "plugged_size_mib": 0, "requested_size_mib": 0}, status
        rss_before = vm_rss_kib(shell.proc.pid)
        assert shell.request("PATCH", "/hotplug/memory", {"requested_size_mib": 258})[0] == 204
        wait_plugged(shell, 258)
        grown = guest_mem_total_kib(shell) - before
        assert grown >= 250 * 1024, f"MemTotal grew by {grown} KiB"
        # The guest can use it: 200 MiB of tmpfs must land there.
        shell.check("mount -t tmpfs -o size=300m t /mnt && "
                    "dd if=/dev/zero of=/mnt/f bs=1M count=200 2>/dev/null && rm /mnt/f")
        rss_used = vm_rss_kib(shell.proc.pid)
        assert rss_used - rss_before > 100 * 1024
        # Unplugged, its pages go back to the host.
        assert shell.request("PATCH", "/hotplug/memory", {"requested_size_mib": 0})[0] == 204
        wait_plugged(shell, 0)
        assert guest_mem_total_kib(shell) <= before + 1024
        # At most ~90 MiB of the 200 fit in boot memory: the rest was plugged.
        assert rss_used - vm_rss_kib(shell.proc.pid) > 64 * 1024, "unplugged pages kept"
        a, b = shell.request("PATCH", "/hotplug/memory", {"requested_size_mib": 3})
        assert a == 400 and "multiple of block_size_mib" in b["fault_message"], b
        a, b = shell.request("PUT", "/hotplug/memory", {"total_size_mib": 128})
        assert a == 400 and "not supported after starting the microVM. Set memory-hotplug" in b["fault_message"]
        assert shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
        metrics = tmp_path / "metrics.json"
        assert total(metrics, "memory_hotplug", "plug_count") >= 1
        assert total(metrics, "memory_hotplug", "plug_fails") == 0
        assert total(metrics, "memory_hotplug", "unplug_count") >= 1
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()


@pytest.mark.usefixtures("kvm")
def test_a_restored_guest_keeps_its_plugged_memory(ember, guest, tmp_path):
    """The memory file holds the plugged slots after RAM (unplugged ones are
    holes); the restore plugs them again and the guest's data in them is
    there."""
    first = tmp_path / "first"
    first.mkdir()
    shell = GuestShell(ember, first, hotplug_config(guest, first), api=True)
    files = {"state": first / "vm.snap", "mem": first / "vm.mem"}
    try:
        shell.wait_ready()
        assert shell.request("PATCH", "/hotplug/memory", {"requested_size_mib": 256})[0] == 204
        wait_plugged(shell, 256)
        mem_total = guest_mem_total_kib(shell)
        shell.check("mount -t tmpfs -o size=300m t /mnt && "
                    "dd if=/dev/urandom of=/mnt/f bs=1M count=150 2>/dev/null")
        digest = shell.check("md5sum /mnt/f").split()[0]
        assert shell.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
        assert shell.request("PUT", "/snapshot/create", {
            "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})[0] == 204
    finally:
        shell.close()
    assert files["mem"].stat().st_size == (128 + 512) << 20
    assert files["mem"].stat().st_blocks * 512 < (128 + 300) << 20, "unplugged slots are holes"
    second = tmp_path / "second"
    second.mkdir()
    shell = GuestShell(ember, second, api=True)
    try:
        status, reply = shell.request("PUT", "/snapshot/load", {
            "snapshot_path": str(files["state"]),
            "mem_backend": {"backend_type": "File", "backend_path": str(files["mem"])},
            "resume_vm": True})
        assert status == 204, (reply, shell.log())
        assert wait_plugged(shell, 256)["requested_size_mib"] == 256
        assert guest_mem_total_kib(shell) == mem_total
        assert shell.check("md5sum /mnt/f").split()[0] == digest
        # Freed first: Linux retries a busy unplug only on a 50 s timer.
        shell.check("rm /mnt/f")
        assert shell.request("PATCH", "/hotplug/memory", {"requested_size_mib": 0})[0] == 204
        wait_plugged(shell, 0)
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()
