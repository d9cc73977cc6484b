"""A hostile guest against the real Ember, seccomp on: the bare-metal guest
of tests/hostile/ (build/ember_hostile_guest.elf) spends a bounded time writing
random and adversarial values to every virtio-mmio register, the 8250 and
the i8042, building broken and valid descriptor chains, resetting devices
mid-request and kicking in storms; then it sits idle, then makes one valid
virtio-blk read of sector 0 and sends one valid frame, and resets.

Ember must stay up the whole time, its VMM thread's CPU time (in the idle
phase and overall), its memory beside guest memory and its log must stay
under the bounds below, the i8042 must not have queued more than a handful
of bytes, and the final requests must be served.

EMBER_HOSTILE_SECS (default 30) and EMBER_HOSTILE_SEED (default 1) set the
attack's length and seed; tools/hostile.sh SECONDS SEED runs this test so."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import EXIT_OK, rss_kib
from test_net import add_tap, new_netns, sh

ATTACK_SECS = int(os.environ.get("EMBER_HOSTILE_SECS", "30"))
SEED = int(os.environ.get("EMBER_HOSTILE_SEED", "1"))
IDLE_SECS = 5
MEM_MIB = 128
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# The bounds, with what a 30 s run measured on a development machine
# (PVM, 2 shared cores) before and after issue 12's fixes.
# The VMM thread does the queue work the guest asks for, so over the whole
# run it may be busy; with the guest doing nothing it must be nearly idle:
# a spinning event loop shows here (before: 27% of the idle phase on a
# loaded machine, after: 0%). The balloon's 1 s statistics timer and stray
# frames on the TAP are its only work then.
IDLE_VMM_CPU_MAX = 0.10          # of the idle phase's wall time
RUN_VMM_CPU_MAX = 0.25           # of the whole run's (before 17%, after 0.2%)
# Ember's own memory (RSS without guest memory), and its growth from the
# guest's first console line to the end (before: 1.87 MiB, the i8042's
# queue; after: 0.13 MiB, from a base of 2.3 MiB).
RSS_MAX_MIB = 8
RSS_GROWTH_MAX_MIB = 1
# Guest-caused messages are rate limited: a fixed allowance plus a little
# per second of attack (before: 1.3 MB, after: 12.8 KB).
LOG_MAX_BYTES = 64 * 1024 + 2 * 1024 * ATTACK_SECS
# Bytes waiting in the i8042 after bursts of a million keyboard commands
# that were never read (before: 929792, after: 16, Firecracker's cap).
I8042_PENDING_MAX = 1024

KNOWN_SECTOR0 = b"EMBER-HOSTILE-KNOWN-SECTOR0 " + bytes(range(256)) * 2
ETHERTYPE = 0x88B5
SNIFFER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind(("tap0", 0))
print("ready", flush=True)
while True:
    frame = s.recv(65536)
    if b"EMBER-HOSTILE seed=" in frame:
        print(frame[14:].split(b"\0")[0].decode(errors="replace"), flush=True)
        break
"""


def fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def thread_ticks(pid):
    """comm -> utime + stime (clock ticks) of each thread of `pid`."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
    return ticks


def vmm_rss_kib(pid):
    """RSS of the process without its guest memory, in KiB; None where its
    guest memory is not there to leave out (before the VM is built, or
    while it is torn down)."""
    guest, rest = rss_kib(pid, MEM_MIB)
    return rest if guest is not None else None


@pytest.fixture
def hostile_guest(ember):
    path = ember.parent / "ember_hostile_guest.elf"
    assert path.is_file(), f"{path} is missing: build the ember_hostile_guest target"
    return path


@pytest.fixture
def hostile_netns():
    name = new_netns("ember-hostile")
    try:
        add_tap(name, "tap0", "172.31.0.1")
        # No IPv6 on the link: its neighbour discovery is noise here.
        sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.tap0.disable_ipv6=1",
           check=False)
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def test_hostile_guest_cannot_stop_starve_or_bloat_ember(ember, hostile_guest, hostile_netns,
                                                          tmp_path):
    ns = ("ip", "netns", "exec", hostile_netns)
    known = tmp_path / "known.img"
    known.write_bytes(KNOWN_SECTOR0 + bytes(4 << 20))
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(bytes(8 << 20))
    config = {
        "boot-source": {
            "kernel_image_path": str(hostile_guest),
            "boot_args": f"hostile.seed={SEED} hostile.secs={ATTACK_SECS} hostile.idle={IDLE_SECS}",
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": MEM_MIB},
        # The first drive is the one the final read checks: read-only, so
        # the attack's writes cannot change it.
        "drives": [
            {"drive_id": "known", "path_on_host": str(known), "is_root_device": False,
             "is_read_only": True, "io_engine": "Sync"},
            {"drive_id": "scratch", "path_on_host": str(scratch), "is_root_device": False,
             "is_read_only": False, "io_engine": "Async"},
        ],
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                "guest_mac": "02:00:00:00:00:42"}],
        "balloon": {"amount_mib": 16, "deflate_on_oom": True, "stats_polling_interval_s": 1},
    }
    (tmp_path / "vm.json").write_text(json.dumps(config))
    console_path = tmp_path / "console.out"
    log_path = tmp_path / "ember.log"

    sniffer = subprocess.Popen([*ns, "python3", "-c", SNIFFER], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert sniffer.stdout.readline().strip() == "ready", sniffer.stderr.read()

    with open(console_path, "wb") as out, open(log_path, "wb") as err:
        proc = subprocess.Popen([*ns, str(ember), "--no-api", "--config-file",
                                 str(tmp_path / "vm.json")],
                                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    start = time.monotonic()
    deadline = start + ATTACK_SECS + IDLE_SECS + 180
    samples = []          # (time, ticks of each thread, vmm rss KiB)
    marks = {}            # console marker -> index into samples when first seen
    last_rss, last_rss_at = 0, 0
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            now = time.monotonic()
            try:
                ticks = thread_ticks(proc.pid)
                if now - last_rss_at >= 0.5:
                    last_rss, last_rss_at = vmm_rss_kib(proc.pid), now
            except (FileNotFoundError, ProcessLookupError):
                break
            samples.append((now, ticks, last_rss, last_rss_at))
            console = console_path.read_bytes()
            for mark in (b"HOSTILE-START", b"HOSTILE-IDLE-BEGIN", b"HOSTILE-IDLE-END"):
                if mark not in marks and mark in console:
                    marks[mark] = len(samples) - 1
            time.sleep(0.1)
        timed_out = proc.poll() is None
        # A line that came out between the last sample and the exit counts
        # from the last sample.
        console = console_path.read_bytes()
        for mark in (b"HOSTILE-START", b"HOSTILE-IDLE-BEGIN", b"HOSTILE-IDLE-END"):
            if mark not in marks and mark in console and samples:
                marks[mark] = len(samples) - 1
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        sniffer.kill()
        sniffed = sniffer.communicate()[0]

    console = console_path.read_bytes().decode("latin-1")
    log = log_path.read_text(errors="replace")
    wall = time.monotonic() - start
    lines = [l for l in console.splitlines() if l.startswith("HOSTILE-")]
    where = (f"seed {SEED}, {ATTACK_SECS} s: exit {code} after {wall:.1f} s\n--- guest ---\n"
             + "\n".join(lines) + f"\n--- log (last 3000 chars of {len(log)}) ---\n{log[-3000:]}")

    # Measured values, printed whatever happens (pytest -s shows them).
    vmm = [s[1].get("ember", 0) for s in samples]
    rss = [s[2] for s in samples if s[2]]
    measured = {"seed": SEED, "attack_s": ATTACK_SECS, "wall_s": round(wall, 1),
                "exit": code, "log_bytes": len(log.encode())}
    if samples:
        run_s = samples[-1][0] - samples[0][0]
        measured["vmm_cpu_s"] = vmm[-1] / CLOCK_TICK
        measured["vmm_cpu_share"] = round(vmm[-1] / CLOCK_TICK / max(run_s, 0.1), 3)
        measured["vcpu_cpu_s"] = samples[-1][1].get("vcpu0", 0) / CLOCK_TICK
        measured["threads"] = sorted(samples[-1][1])
    if rss:
        measured["rss_max_mib"] = round(max(rss) / 1024, 2)
        # From the first measurement after the guest's first line: Ember
        # has made its devices by then.
        started = samples[marks.get(b"HOSTILE-START", 0)][0]
        base = next((s[2] for s in samples if s[3] >= started and s[2]), rss[0])
        measured["rss_base_mib"] = round(base / 1024, 2)
        measured["rss_growth_mib"] = round((max(rss) - base) / 1024, 2)
    if b"HOSTILE-IDLE-BEGIN" in marks and b"HOSTILE-IDLE-END" in marks:
        a, b = marks[b"HOSTILE-IDLE-BEGIN"], marks[b"HOSTILE-IDLE-END"]
        idle_wall = samples[b][0] - samples[a][0]
        measured["idle_s"] = round(idle_wall, 2)
        measured["idle_vmm_cpu_share"] = round(
            (vmm[b] - vmm[a]) / CLOCK_TICK / max(idle_wall, 0.1), 3)
        measured["idle_vmm_ticks"] = [vmm[i] - vmm[a] for i in range(a, b + 1, 5)]
    pending = re.search(r"HOSTILE-I8042 pending=(\d+)", console)
    measured["i8042_pending"] = int(pending.group(1)) if pending else None
    print("\nhostile guest measured:", json.dumps(measured))

    assert not timed_out, f"the guest did not finish in time\n{where}"
    assert code == EXIT_OK, f"Ember must stay up until the guest resets\n{where}"
    assert "HOSTILE-DONE" in console, f"the guest did not finish its run\n{where}"
    assert "HOSTILE-ATTACK-END" in console, where

    blk = re.search(r"HOSTILE-RESULT blk base=0x(\w+) status=(\d+) len=(\d+) fnv=(\w+) head=(\w+)",
                    console)
    assert blk, f"the final virtio-blk read was not served\n{where}"
    assert blk.group(2) == "0", f"the final read failed\n{where}"
    assert blk.group(5) == KNOWN_SECTOR0[:32].hex(), where
    assert int(blk.group(4), 16) == fnv1a(KNOWN_SECTOR0[:512]), where
    assert "HOSTILE-RESULT net sent=1" in console, f"the final frame was not taken\n{where}"
    assert sniffed.strip() == f"EMBER-HOSTILE seed={SEED}", \
        f"the final frame did not reach the TAP: {sniffed!r}\n{where}"

    bounds = [
        ("idle_vmm_cpu_share", IDLE_VMM_CPU_MAX, "the VMM thread worked while the guest idled"),
        ("vmm_cpu_share", RUN_VMM_CPU_MAX, "the VMM thread's CPU time over the run"),
        ("rss_max_mib", RSS_MAX_MIB, "Ember's memory beside guest memory"),
        ("rss_growth_mib", RSS_GROWTH_MAX_MIB, "Ember's memory grew under the attack"),
        ("log_bytes", LOG_MAX_BYTES, "the guest flooded the log"),
        ("i8042_pending", I8042_PENDING_MAX, "the i8042 queued without a bound"),
    ]
    over = [f"{why}: {key} = {measured.get(key)} (bound {bound})"
            for key, bound, why in bounds
            if measured.get(key) is None or measured[key] > bound]
    assert not over, "\n".join(over) + f"\n{where}"
