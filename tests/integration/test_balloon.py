"""virtio-balloon with a real Linux guest, checked from both sides:
inflating the balloon takes memory out of the guest's /proc/meminfo and
returns its pages to the host, the statistics Ember reports are the
guest's own figures, and deflating gives the memory back."""

import time

from conftest import EXIT_OK, boot_config, rss_kib
from guest_shell import GuestShell, shell_boot_args

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
