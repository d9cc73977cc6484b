"""virtio-balloon with real Linux guests: inflating the balloon returns the
guest's pages to the host, and statistics arrive. Two guests run side by
side, one with an empty balloon as the control; init_on_free=1 makes each
guest kernel touch all of its memory at boot, so both start fully resident."""

import re
import time
from pathlib import Path

from conftest import EXIT_SIGTERM, boot_config

MEM_MIB = 128
BALLOON_MIB = 64


def guest_rss_mib(pid):
    """RSS of the guest memory mapping (the one as large as the guest)."""
    size_line = f"Size: {MEM_MIB * 1024:>14} kB"
    in_guest = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            in_guest = False
        elif line.startswith("Size:"):
            in_guest = line.split()[1] == str(MEM_MIB * 1024)
        elif line.startswith("Rss:") and in_guest:
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {size_line} mapping in ember's smaps")


def last_stats(log):
    lines = [l for l in log.splitlines() if "balloon statistics:" in l]
    if not lines:
        return {}
    return dict(kv.split("=") for kv in lines[-1].split("balloon statistics:")[1].split())


def config(amount_mib):
    c = boot_config(
        "", boot_args="console=ttyS0 reboot=k panic=1 pci=off init_on_free=1 ember_idle",
        mem_mib=MEM_MIB)
    c["balloon"] = {"amount_mib": amount_mib, "deflate_on_oom": True,
                    "stats_polling_interval_s": 1}
    return c


def test_inflating_returns_memory_to_the_host(ember, guest, tmp_path, microvms):
    vms = {}
    for amount in (0, BALLOON_MIB):
        c = config(amount)
        c["boot-source"]["kernel_image_path"] = str(guest["vmlinux"])
        c["boot-source"]["initrd_path"] = str(guest["initramfs.cpio"])
        workdir = tmp_path / f"balloon{amount}"
        workdir.mkdir()
        vms[amount] = microvms(ember, workdir, c, args=["--level", "Debug"])

    # The guest reports the balloon's pages as no longer free. (With
    # deflate_on_oom it keeps them in its total, which shows the feature was
    # negotiated: without it Linux takes them out of total-memory too.)
    deadline = time.monotonic() + 300
    stats = {}
    while time.monotonic() < deadline:
        stats = {a: last_stats(vm.log()) for a, vm in vms.items()}
        if stats[0] and stats[BALLOON_MIB] and int(stats[BALLOON_MIB]["free-memory"]) < \
                int(stats[0]["free-memory"]) - (BALLOON_MIB - 8) * 2**20:
            break
        for vm in vms.values():
            assert vm.proc.poll() is None, vm.log()
        time.sleep(2)
    else:
        raise AssertionError(f"no statistics showing the balloon: {stats}")
    assert stats[0]["total-memory"] == stats[BALLOON_MIB]["total-memory"]
    assert "available-memory" in stats[0]

    # Host side: the inflated guest's memory is about 64 MiB smaller.
    time.sleep(3)
    control = guest_rss_mib(vms[0].proc.pid)
    inflated = guest_rss_mib(vms[BALLOON_MIB].proc.pid)
    assert control > MEM_MIB - 16, f"control guest should be fully resident: {control} MiB"
    assert control - inflated > BALLOON_MIB - 12, (control, inflated)

    for vm in vms.values():
        vm.proc.terminate()
        assert vm.wait() == EXIT_SIGTERM, vm.log()
