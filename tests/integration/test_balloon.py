"""virtio-balloon with a real Linux guest, checked from both sides:
inflating the balloon takes memory out of the guest's /proc/meminfo and
returns its pages to the host, the statistics Ember reports are the
guest's own figures, and deflating gives the memory back; memory the guest
frees goes back to the host through free page reporting and hinting."""

import hashlib
import time

from conftest import EXIT_OK, boot_config, rss_kib
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import total

MEM_MIB = 128
BALLOON_MIB = 64


def guest_rss_mib(pid):
    guest = rss_kib(pid, MEM_MIB)[0]
    assert guest is not None, f"no {MEM_MIB} MiB of guest memory in Ember's smaps"
    return guest / 1024


def meminfo_kib(shell):
    """The guest's /proc/meminfo, in KiB."""
    text = shell.check("cat /proc/meminfo")
    return {l.split(":")[0]: int(l.split()[1]) for l in text.splitlines() if l.endswith(" kB")}


def stats_when(shell, predicate, timeout=120):
    """Polls GET /balloon/statistics until `predicate(stats)` holds. The wait
    starts again while the balloon moves: on a loaded PVM host the guest
    frees (and, with init_on_free, zeroes) its pages at emulated speed."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        status, stats = shell.request("GET", "/balloon/statistics")
        if status == 200 and predicate(stats):
            return stats
        if status == 200 and stats.get("actual_mib") != last:
            deadline, last = time.monotonic() + timeout, stats.get("actual_mib")
        assert time.monotonic() < deadline, (status, stats, shell.log()[-2000:])
        time.sleep(0.5)


def test_inflating_shows_in_the_guest_and_returns_memory_to_the_host(ember, guest, tmp_path):
    # init_on_free=1: the guest kernel zeroes every page it frees at boot,
    # so the guest starts fully resident on the host.
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args() + " init_on_free=1",
                         mem_mib=MEM_MIB)
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    # Without deflate_on_oom, Linux takes the balloon's pages out of its total.
    config["balloon"] = {"amount_mib": 0, "deflate_on_oom": False, "stats_polling_interval_s": 1}
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        before = meminfo_kib(shell)
        resident = guest_rss_mib(shell.proc.pid)
        assert resident > MEM_MIB - 16, f"the guest should be fully resident: {resident} MiB"

        assert shell.request("PATCH", "/balloon", {"amount_mib": BALLOON_MIB})[0] == 204
        stats_when(shell, lambda s: s["actual_mib"] == BALLOON_MIB)
        inflated = meminfo_kib(shell)
        assert before["MemTotal"] - inflated["MemTotal"] == BALLOON_MIB * 1024, (before, inflated)
        assert before["MemFree"] - inflated["MemFree"] > (BALLOON_MIB - 8) * 1024

        # The statistics the guest reports match its own figures.
        stats = stats_when(shell, lambda s: s.get("total_memory") == inflated["MemTotal"] * 1024)
        free = meminfo_kib(shell)["MemFree"] * 1024
        assert abs(stats["free_memory"] - free) < 8 << 20, (stats, free)
        assert stats["available_memory"] <= stats["total_memory"]

        # The host got the pages back.
        time.sleep(2)
        shrunk = guest_rss_mib(shell.proc.pid)
        assert resident - shrunk > BALLOON_MIB - 12, (resident, shrunk)

        # Deflating gives them back to the guest.
        assert shell.request("PATCH", "/balloon", {"amount_mib": 0})[0] == 204
        stats_when(shell, lambda s: s["actual_mib"] == 0)
        assert meminfo_kib(shell)["MemTotal"] == before["MemTotal"]
        assert shell.shutdown() == EXIT_OK, shell.log()
    finally:
        shell.close()


# Free page reporting and hinting: the guest hands memory it freed back
# without a balloon target. A tmpfs file makes guest pages resident on the
# host; deleting it frees them in the guest only.
# Linux reports only while 128 MiB (32 blocks of 4 MiB) more than its low
# watermark stay free.
FREE_MEM_MIB = 256
FILE_MIB = 48


def free_pages_guest(ember, guest, tmp_path, **balloon):
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args(), mem_mib=FREE_MEM_MIB)
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    config["balloon"] = {"amount_mib": 0, "deflate_on_oom": False, **balloon}
    config["metrics"] = {"metrics_path": str(tmp_path / "metrics.json")}
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        shell.check("mount -t tmpfs -o size=128m none /mnt")  # the root is read-only
    except BaseException:
        shell.close()
        raise
    return shell


def resident_mib(shell):
    guest = rss_kib(shell.proc.pid, FREE_MEM_MIB)[0]
    assert guest is not None, f"no {FREE_MEM_MIB} MiB of guest memory in Ember's smaps"
    return guest / 1024


def fill_and_free(shell):
    """Writes FILE_MIB into the tmpfs and deletes it; the guest's RSS with
    the file in place."""
    before = resident_mib(shell)
    shell.check(f"dd if=/dev/zero of=/mnt/f bs=1M count={FILE_MIB} 2>/dev/null", timeout=300)
    full = resident_mib(shell)
    # Part of the file may land on memory the guest touched and freed before.
    assert full - before > FILE_MIB - 16, (before, full)
    shell.check("rm /mnt/f")
    return full


def balloon_count(shell, field):
    """A balloon metric's total so far (FlushMetrics writes a line now)."""
    assert shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
    return total(shell.workdir / "metrics.json", "balloon", field)


def wait_resident_at_most(shell, mib, timeout=120):
    deadline = time.monotonic() + timeout
    while resident_mib(shell) > mib:
        assert time.monotonic() < deadline, (resident_mib(shell), mib, shell.log()[-2000:])
        time.sleep(0.5)


def test_free_page_reporting_returns_freed_memory(ember, guest, tmp_path):
    shell = free_pages_guest(ember, guest, tmp_path, free_page_reporting=True)
    try:
        status, body = shell.request("GET", "/balloon")
        assert status == 200 and body["free_page_reporting"] is True, body
        # Hinting was not asked for: its commands are refused, saying so.
        status, body = shell.request("PATCH", "/balloon/hinting/start")
        assert status == 400 and "hinting when not enabled" in body["fault_message"], body
        full = fill_and_free(shell)
        # Linux reports blocks that stayed free 2 s; Ember drops them.
        wait_resident_at_most(shell, full - (FILE_MIB - 16))
        assert balloon_count(shell, "free_page_report_freed") >= (FILE_MIB - 16) << 20
        assert balloon_count(shell, "free_page_report_fails") == 0
        # The guest reuses the dropped memory and reads back what it wrote.
        out = shell.check("yes ember | head -c 8000000 > /mnt/g && md5sum /mnt/g")
        assert out.split()[0] == hashlib.md5(b"ember\n" * 1333333 + b"em").hexdigest(), out
        assert shell.shutdown() == EXIT_OK, shell.log()
    finally:
        shell.close()


def hinting_status(shell):
    status, body = shell.request("GET", "/balloon/hinting/status")
    assert status == 200, body
    return body


def wait_hinting(shell, host_cmd, guest_cmd, timeout=120):
    deadline = time.monotonic() + timeout
    while hinting_status(shell) != {"host_cmd": host_cmd, "guest_cmd": guest_cmd}:
        assert time.monotonic() < deadline, (hinting_status(shell), shell.log()[-2000:])
        time.sleep(0.5)


def test_free_page_hinting_runs_end_to_end(ember, guest, tmp_path):
    shell = free_pages_guest(ember, guest, tmp_path, free_page_hinting=True)
    try:
        assert hinting_status(shell) == {"host_cmd": 0, "guest_cmd": None}
        full = fill_and_free(shell)
        time.sleep(4)
        assert resident_mib(shell) > full - 8, "nothing is dropped without a run"

        # A run with Firecracker's defaults: the guest hints what it can
        # spare, stops, and the device says DONE so the guest frees it.
        assert shell.request("PATCH", "/balloon/hinting/start")[0] == 204
        wait_hinting(shell, host_cmd=1, guest_cmd=0)
        assert resident_mib(shell) <= full - (FILE_MIB - 16)
        hinted = balloon_count(shell, "free_page_hint_count")
        assert hinted > 0 and balloon_count(shell, "free_page_hint_fails") == 0
        assert balloon_count(shell, "free_page_hint_freed") >= (FILE_MIB - 16) << 20
        out = shell.check("yes ember | head -c 8000000 > /mnt/g && md5sum /mnt/g")
        assert out.split()[0] == hashlib.md5(b"ember\n" * 1333333 + b"em").hexdigest(), out

        # Without acknowledging, the run stays open after the guest's stop
        # until the host ends it; here a resume does, as in Firecracker.
        status, body = shell.request("PATCH", "/balloon/hinting/start",
                                     {"acknowledge_on_stop": False})
        assert status == 204, body
        # The status reads {3, 0} at once (the guest's 0 is the last run's):
        # the run's own hints show that the guest took it up.
        deadline = time.monotonic() + 120
        while balloon_count(shell, "free_page_hint_count") == hinted:
            assert time.monotonic() < deadline, (hinting_status(shell), shell.log()[-2000:])
            time.sleep(0.5)
        wait_hinting(shell, host_cmd=3, guest_cmd=0)
        assert shell.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
        assert shell.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
        wait_hinting(shell, host_cmd=1, guest_cmd=0)
        assert shell.check("md5sum /mnt/g") == out
        assert shell.shutdown() == EXIT_OK, shell.log()
    finally:
        shell.close()
