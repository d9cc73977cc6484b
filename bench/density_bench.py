#!/usr/bin/python3
"""Density: how many idle microVMs (1 vCPU, 128 MiB, build/guest/vmlinux,
busybox init with the guest agent) this host holds while every one stays
responsive, and the host memory and CPU each idle VM costs. Needs root.
Prints a table and writes JSON (--json FILE); asserts nothing.

    bench/density_bench.py --steps 10,50,100,200,400,700,1000 --json d.json
    bench/density_bench.py --ksm ...        # with --merge-guest-memory and KSM on
    bench/density_bench.py --qemu-steps 10  # QEMU microvm restored the same way

One guest is booted once (tens to hundreds of seconds on PVM hosts) until
its agent answers and its console shell is idle, paused and snapshotted;
the VMs are clones of it: a fresh Ember process each, PUT /snapshot/load
with the File backend (guest memory MAP_PRIVATE from the one memory file,
so clean pages are shared page cache) and vsock_override (a uds_path of
its own). N grows step by step; at each step, once every clone has
answered:
  - CPU: every thread's /proc/PID/task/*/schedstat (ns on a CPU) over an
    idle interval, per VM, and the host's busy share from /proc/stat over
    the same interval (ksmd's own CPU is added to the per-VM figure when
    KSM runs);
  - memory: the fall of MemAvailable since before the first clone, per VM
    (what the host really gave: page tables, KVM's own allocations and the
    private copies of the pages the guests wrote), and each process's PSS
    and RSS from /proc/PID/smaps_rollup;
  - responsiveness: each VM's agent is asked, one after another, through
    the vsock socket (CONNECT 1024, then the protocol's HELLO, answered by
    the agent in guest user space, no exec); the step counts as held when
    every VM answers within --bound-ms.
It stops at the first step that is not held, when a clone dies, or when
the next step would take MemAvailable below --mem-floor-mib (3 GiB by
default). Every VM is killed at the end, on error or interrupt too.

QEMU (--qemu-steps): microvm with the same kernel, root drive and boot
arguments, booted once, saved with `migrate exec:` and started N times with
-incoming from that file (QEMU reads the whole image into anonymous memory:
nothing is shared through the page cache); mem-merge follows --ksm. This
host's kernel has no vhost-vsock, so QEMU's clones are not probed: their
memory and CPU only.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEM_MIB = 128
AGENT_PORT = 1024
GUEST_CID = 3
BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off ember_shell"
# What Ember adds by itself on PVM hosts (src/vmm/host.h); QEMU gets the same.
PVM_ARGS = "noxsave clearcpuid=popcnt,cx16,smap,smep noint3selftest pvmuser"
READY = b"EMBER-SHELL-READY"
KSM = Path("/sys/kernel/mm/ksm")


def pvm_host():
    return os.path.isdir("/sys/module/kvm_pvm")


def meminfo_mib(key="MemAvailable"):
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_ns(pid):
    """CPU time of every thread of `pid` so far (schedstat's first field)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def host_jiffies():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def host_steal_ms():
    """Time the host's own hypervisor ran others on this host's CPUs, all
    CPUs together (/proc/stat's steal)."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(f[8]) * 1000 / os.sysconf("SC_CLK_TCK")


def rollup_kib(pid):
    """(RSS, PSS) in KiB from /proc/PID/smaps_rollup, hugetlbfs pages (which
    it leaves out of both) counted in both."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith(("Private_Hugetlb:", "Shared_Hugetlb:")):
                rss += int(line.split()[1])
                pss += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, pss


def ksmd_pid():
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "ksmd":
                    return int(p.name)
            except OSError:
                pass
    return None


def ksm_counters():
    if not KSM.is_dir():
        return {}
    return {k: int((KSM / k).read_text()) for k in
            ("pages_shared", "pages_sharing", "pages_unshared", "full_scans")}


def summary(values):
    values = sorted(values)
    if not values:
        return None
    return {"median": statistics.median(values), "min": values[0], "max": values[-1],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))]}


# --- Ember's API and the agent over plain sockets (no curl process per call:
# a thousand VMs) ---

def http(sock_path, method, path, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                  f"\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        status = int(head.split(b" ")[1])
        return status, (json.loads(rest) if rest.strip() else None)
    finally:
        s.close()


def probe(uds, timeout, why=None, phases=None):
    """Seconds until the guest agent answers HELLO through the vsock
    socket `uds` (Firecracker's CONNECT handshake first), or None, with the
    reason appended to the list `why` if given; `phases`, a dict if given,
    gets the seconds until Ember's OK."""
    t = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    reason = None
    waiting = "connect"
    try:
        s.connect(str(uds))
        s.sendall(f"CONNECT {AGENT_PORT}\n".encode())
        stream = s.makefile("rb")
        waiting = "OK"  # Ember's answer, once the guest accepted the stream
        line = stream.readline()
        if phases is not None:
            phases["ok_s"] = time.monotonic() - t
        if not line.startswith(b"OK "):
            reason = f"CONNECT answered {line[:40]!r} after {time.monotonic() - t:.2f} s"
            return None
        s.sendall(struct.pack("<IBI", 4, 1, 2))  # HELLO, version 2 (src/agent/PROTOCOL.md)
        waiting = f"HELLO's answer (OK after {time.monotonic() - t:.2f} s)"
        reply = stream.read(9)
        if len(reply) < 9 or struct.unpack("<IB", reply[:5]) != (4, 1):
            reason = f"HELLO answered {reply!r}"
            return None
        return time.monotonic() - t
    except OSError as e:
        reason = f"{type(e).__name__} after {time.monotonic() - t:.2f} s waiting for {waiting}: {e}"
        return None
    finally:
        s.close()
        if reason and why is not None:
            why.append(reason)


def wait_until(pred, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def connectable(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Procs:
    """Every process this program started; all killed at the end."""

    def __init__(self):
        self.procs = []

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.procs = [p for p in self.procs if p.poll() is None]


PROCS = Procs()


def golden_ember(ember, kernel, rootfs, d, boot_timeout):
    """Boots one guest until its agent answers and its shell is idle, then
    snapshots it into d/vm.snap and d/vm.mem; returns the boot's seconds."""
    d.mkdir(parents=True, exist_ok=True)
    uds = d / "v.sock"
    config = {
        "boot-source": {"kernel_image_path": str(kernel), "boot_args": BOOT_ARGS},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": MEM_MIB},
        "drives": [{"drive_id": "rootfs", "path_on_host": str(rootfs),
                    "is_root_device": True, "is_read_only": True}],
        "vsock": {"guest_cid": GUEST_CID, "uds_path": str(uds)}}
    (d / "config.json").write_text(json.dumps(config))
    sock = d / "api.sock"
    t = time.monotonic()
    with open(d / "console.out", "wb") as out, open(d / "ember.log", "wb") as err:
        p = PROCS.spawn([str(ember), "--api-sock", str(sock), "--config-file",
                         str(d / "config.json")], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        wait_until(lambda: READY in (d / "console.out").read_bytes(), boot_timeout,
                   "the golden guest's shell", p)
        wait_until(lambda: probe(uds, 30) is not None, 120, "the golden guest's agent", p)
        booted = time.monotonic() - t
        time.sleep(5)  # let the guest settle into idle
        assert http(sock, "PATCH", "/vm", {"state": "Paused"})[0] == 204
        status, reply = http(sock, "PUT", "/snapshot/create", {
            "snapshot_path": str(d / "vm.snap"), "mem_file_path": str(d / "vm.mem")})
        if status != 204:
            raise RuntimeError(reply)
        return booted
    finally:
        p.kill()
        p.wait()


class EmberClone:
    def __init__(self, ember, golden, d, merge):
        self.dir = d
        d.mkdir()
        self.sock = d / "api.sock"
        self.uds = d / "v.sock"
        self.golden = golden
        args = [str(ember), "--api-sock", str(self.sock), "--level", "Warning"]
        if merge:
            args.append("--merge-guest-memory")
        with open(d / "ember.log", "wb") as err:
            self.proc = PROCS.spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        self.pid = self.proc.pid

    def load(self):
        wait_until(lambda: connectable(self.sock), 30, "Ember's API socket", self.proc)
        self.t_load = time.monotonic()
        status, reply = http(self.sock, "PUT", "/snapshot/load", {
            "snapshot_path": str(self.golden / "vm.snap"),
            "mem_backend": {"backend_type": "File", "backend_path": str(self.golden / "vm.mem")},
            "vsock_override": {"uds_path": str(self.uds)}, "resume_vm": True})
        if status != 204:
            raise RuntimeError(f"snapshot load: {status} {reply}")

    def alive(self):
        return self.proc.poll() is None


def qemu_cmd(kernel, rootfs, d, merge):
    args = f"{BOOT_ARGS} root=/dev/vda ro" + (f" {PVM_ARGS}" if pvm_host() else "")
    return ["qemu-system-x86_64", "-M",
            f"microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off,"
            f"mem-merge={'on' if merge else 'off'}",
            "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-smp", "1",
            "-m", f"{MEM_MIB}m", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", f"file:{d / 'console.out'}",
            "-kernel", str(kernel), "-append", args,
            "-drive", f"file={rootfs},if=none,id=rootfs,format=raw,readonly=on",
            "-device", "virtio-blk-device,drive=rootfs",
            "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off"]


def qmp(sock, *commands, timeout=120):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    f = s.makefile("r")
    f.readline()
    replies = []
    for c in ({"execute": "qmp_capabilities"},) + commands:
        s.sendall((json.dumps(c) + "\n").encode())
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                replies.append(r)
                break
    s.close()
    return replies[1:]


def golden_qemu(kernel, rootfs, d, boot_timeout):
    d.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    with open(d / "qemu.log", "wb") as err:
        p = PROCS.spawn(qemu_cmd(kernel, rootfs, d, False), stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until(lambda: (d / "console.out").exists() and READY in
                   (d / "console.out").read_bytes(), boot_timeout, "QEMU's golden guest", p)
        booted = time.monotonic() - t
        time.sleep(5)
        qmp(d / "qmp.sock", {"execute": "stop"},
            {"execute": "migrate", "arguments": {"uri": f"exec:cat > {d / 'vm.qemu'}"}})
        wait_until(lambda: qmp(d / "qmp.sock", {"execute": "query-migrate"})[0]["return"]
                   .get("status") == "completed", 120, "QEMU's migration to a file", p)
        qmp(d / "qmp.sock", {"execute": "quit"})
        p.wait(timeout=30)
        return booted
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


class QemuClone:
    def __init__(self, kernel, rootfs, golden, d, merge):
        self.dir = d
        d.mkdir()
        cmd = qemu_cmd(kernel, rootfs, d, merge) + ["-incoming", f"exec:cat {golden / 'vm.qemu'}"]
        with open(d / "qemu.log", "wb") as err:
            self.proc = PROCS.spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        self.pid = self.proc.pid
        self.t_load = time.monotonic()

    def load(self):
        wait_until(lambda: self.dir.joinpath("qmp.sock").exists()
                   and connectable(self.dir / "qmp.sock"), 30, "QEMU's QMP socket", self.proc)
        status = lambda: qmp(self.dir / "qmp.sock", {"execute": "query-status"})[0]["return"]
        # The golden guest was stopped before it was saved: QEMU keeps its
        # clones paused after the incoming migration until `cont`.
        wait_until(lambda: status()["status"] != "inmigrate", 120, "QEMU's incoming migration",
                   self.proc)
        qmp(self.dir / "qmp.sock", {"execute": "cont"})
        wait_until(lambda: status()["running"], 30, "QEMU's clone running", self.proc)

    def alive(self):
        return self.proc.poll() is None


def settle_ksm(timeout):
    """Waits until KSM's sharing stops growing (under 1% in 5 s)."""
    deadline = time.monotonic() + timeout
    last = ksm_counters().get("pages_sharing", 0)
    while time.monotonic() < deadline:
        time.sleep(5)
        now = ksm_counters().get("pages_sharing", 0)
        if now <= last * 1.01 and now > 0:
            return
        last = now


def measure_step(vms, args, base_avail, probe_them):
    n = len(vms)
    dead = [vm for vm in vms if not vm.alive()]
    if dead:
        return {"n": n, "held": False, "why": f"{len(dead)} VMs exited"}
    if args.ksm:
        settle_ksm(args.ksm_wait_s)
    time.sleep(args.settle_s)
    ksmd = ksmd_pid() if args.ksm else None
    before = {vm.pid: cpu_ns(vm.pid) for vm in vms}
    k0 = cpu_ns(ksmd) if ksmd else 0
    b0, t0 = host_jiffies()
    w0 = time.monotonic()
    time.sleep(args.idle_s)
    wall = time.monotonic() - w0
    b1, t1 = host_jiffies()
    k1 = cpu_ns(ksmd) if ksmd else 0
    per_vm_cpu = [(cpu_ns(vm.pid) - before[vm.pid]) / 1e9 / wall * 100 for vm in vms]
    ksmd_pct = (k1 - k0) / 1e9 / wall * 100
    avail = meminfo_mib()
    mems = [rollup_kib(vm.pid) for vm in vms]
    result = {
        "n": n,
        "cpu_pct_per_vm": summary(per_vm_cpu),
        "cpu_pct_all_vms": sum(per_vm_cpu),
        "ksmd_cpu_pct": ksmd_pct,
        "host_busy_pct": (b1 - b0) / max(1, t1 - t0) * 100 * os.cpu_count(),
        "mem_available_mib": avail,
        "host_mib_per_vm": (base_avail - avail) / n,
        "pss_mib_per_vm": summary([m[1] / 1024 for m in mems]),
        "rss_mib_per_vm": summary([m[0] / 1024 for m in mems]),
        "pss_mib_all_vms": sum(m[1] for m in mems) / 1024,
        "ksm": ksm_counters() if args.ksm else None,
    }
    if probe_them:
        failures, late, lat = [], [], []
        for i, vm in enumerate(vms):
            phases = {}
            steal0, cpu0 = host_steal_ms(), cpu_ns(vm.pid)
            x = probe(vm.uds, args.bound_ms / 1000 * 2, failures, phases)
            lat.append(x)
            if x is not None and x * 1000 > args.bound_ms:
                # Which clone, how long after its restore, whether the wait
                # was for the guest's accept (OK) or its agent, the CPU the
                # clone spent meanwhile, and the host's steal time (time its
                # own hypervisor gave the CPUs to others).
                late.append({"clone": i, "age_s": round(time.monotonic() - vm.t_load, 1),
                             "ok_ms": round(phases["ok_s"] * 1000, 1),
                             "answer_ms": round(x * 1000, 1),
                             "clone_cpu_ms": round((cpu_ns(vm.pid) - cpu0) / 1e6, 1),
                             "host_steal_ms": round(host_steal_ms() - steal0, 1)})
        ok = [x * 1000 for x in lat if x is not None]
        slow = sum(1 for x in lat if x is None or x * 1000 > args.bound_ms)
        result["probe_ms"] = summary(ok)
        result["unanswered"] = slow
        result["held"] = slow == 0
        if slow:
            result["why"] = f"{slow} of {n} VMs did not answer within {args.bound_ms} ms"
            result["failures"] = failures
            result["late"] = late
    else:
        result["held"] = True
    return result


def run_series(name, make_clone, steps, args, probe_them):
    """Grows the clones step by step; returns (steps measured, restore times)."""
    vms, results, restore_s = [], [], []
    base_avail = meminfo_mib()
    try:
        for n in steps:
            need = (results[-1]["host_mib_per_vm"] if results else 16) * (n - len(vms)) * 1.5
            if meminfo_mib() - need < args.mem_floor_mib:
                results.append({"n": n, "held": False, "skipped": True,
                                "why": f"MemAvailable {meminfo_mib():.0f} MiB would fall below "
                                       f"the floor ({args.mem_floor_mib} MiB) at this step"})
                break
            new = []
            t_step = time.monotonic()
            while len(vms) < n:
                batch = [make_clone(len(vms) + i) for i in range(min(args.batch, n - len(vms)))]
                for vm in batch:
                    vm.load()
                vms += batch
                new += batch
            if probe_them:
                for vm in new:
                    wait_until(lambda: probe(vm.uds, 30) is not None, args.restore_timeout_s,
                               f"{name} clone {vm.dir.name}'s agent", vm.proc)
                    restore_s.append(time.monotonic() - vm.t_load)
            spawn_s = time.monotonic() - t_step
            r = measure_step(vms, args, base_avail, probe_them)
            r["step_seconds"] = spawn_s
            results.append(r)
            print_row(name, r)
            if not r["held"]:
                break
    except (RuntimeError, TimeoutError) as e:
        results.append({"n": len(vms), "held": False, "why": f"error: {e}"})
        print(f"{name}: stopped: {e}", file=sys.stderr)
    finally:
        PROCS.kill_all()
    return results, restore_s


def fmt(s, f="{:.2f}"):
    if not s:
        return "-"
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def print_row(name, r):
    if "cpu_pct_per_vm" not in r:
        print(f"{name:>14} {r['n']:>5}  not measured: {r.get('why')}", flush=True)
        return
    print(f"{name:>14} {r['n']:>5} {fmt(r['cpu_pct_per_vm'], '{:.3f}'):>24} "
          f"{r['host_busy_pct']:>7.1f} {r['host_mib_per_vm']:>8.2f} "
          f"{fmt(r['pss_mib_per_vm']):>20} {fmt(r.get('probe_ms'), '{:.1f}'):>22} "
          f"{'yes' if r['held'] else 'NO: ' + r.get('why', '')}", flush=True)


def header():
    print(f"{'series':>14} {'N':>5} {'CPU %/VM med (min-max)':>24} {'host %':>7} "
          f"{'MiB/VM':>8} {'PSS MiB/VM':>20} {'probe ms':>22} held", flush=True)


def golden_dir(args, kind):
    """Where a golden snapshot is kept: by kernel, root file system and
    (for Ember's) the binary that wrote it, each by path and change time."""
    h = hashlib.sha256(kind.encode())
    for p in [args.kernel, args.rootfs] + ([args.ember] if kind == "ember" else []):
        p = Path(p).resolve()
        h.update(f"{p}:{p.stat().st_mtime_ns}".encode())
    return Path(args.workdir) / f"golden-{kind}-{h.hexdigest()[:12]}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ember", default=str(ROOT / "build" / "ember"))
    p.add_argument("--kernel", default=str(ROOT / "build" / "guest" / "vmlinux"))
    p.add_argument("--rootfs", default=str(ROOT / "build" / "guest" / "rootfs.ext4"))
    p.add_argument("--steps", default="10,50,100,200,400,700,1000")
    p.add_argument("--qemu-steps", default="", help="e.g. 10,50; empty: no QEMU series")
    p.add_argument("--bound-ms", type=float, default=1000)
    p.add_argument("--idle-s", type=float, default=10, help="the CPU measuring interval")
    p.add_argument("--settle-s", type=float, default=5)
    p.add_argument("--mem-floor-mib", type=float, default=3072)
    p.add_argument("--batch", type=int, default=10, help="clones spawned before loading them")
    p.add_argument("--restore-timeout-s", type=float, default=300)
    p.add_argument("--boot-timeout-s", type=float, default=900)
    p.add_argument("--ksm", action="store_true",
                   help="--merge-guest-memory (QEMU: mem-merge=on) and KSM run=1 meanwhile")
    p.add_argument("--ksm-pages-to-scan", type=int, default=2000)
    p.add_argument("--ksm-wait-s", type=float, default=90)
    p.add_argument("--workdir", default="/tmp/ember-density",
                   help="golden snapshots are kept here and reused (by kernel, rootfs, binary)")
    p.add_argument("--label", default="", help="a name for this run in the JSON")
    p.add_argument("--prepare", action="store_true",
                   help="only boot and snapshot the golden guests (they take the longest)")
    p.add_argument("--json")
    args = p.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    # A thousand VMs: two API/vsock sockets and a log file each.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    ksm_saved = None
    out = {"label": args.label, "kernel": str(Path(args.kernel).resolve()),
           "ksm": args.ksm, "bound_ms": args.bound_ms, "idle_s": args.idle_s,
           "host": {"cpus": os.cpu_count(), "mem_total_mib": meminfo_mib("MemTotal"),
                    "pvm": pvm_host()}}
    try:
        if args.ksm:
            ksm_saved = {k: (KSM / k).read_text().strip() for k in ("run", "pages_to_scan")}
            (KSM / "pages_to_scan").write_text(str(args.ksm_pages_to_scan))
            (KSM / "run").write_text("1")
        header()
        g = golden_dir(args, "ember")
        if not (g / "vm.mem").exists():
            shutil.rmtree(g, ignore_errors=True)
            out["ember_golden_boot_s"] = golden_ember(args.ember, args.kernel, args.rootfs, g,
                                                      args.boot_timeout_s)
        gq = golden_dir(args, "qemu")
        if args.qemu_steps and not (gq / "vm.qemu").exists():
            shutil.rmtree(gq, ignore_errors=True)
            out["qemu_golden_boot_s"] = golden_qemu(args.kernel, args.rootfs, gq,
                                                    args.boot_timeout_s)
        if args.prepare:
            return
        steps = [int(s) for s in args.steps.split(",") if s]
        if steps:
            with tempfile.TemporaryDirectory(prefix="clones-", dir=args.workdir) as clones:
                out["ember"], restore = run_series(
                    "Ember", lambda i: EmberClone(args.ember, g, Path(clones) / str(i), args.ksm),
                    steps, args, probe_them=True)
            out["ember_restore_to_answer_ms"] = summary([s * 1000 for s in restore])
        if args.qemu_steps:
            with tempfile.TemporaryDirectory(prefix="qclones-", dir=args.workdir) as clones:
                out["qemu"], _ = run_series(
                    "QEMU", lambda i: QemuClone(args.kernel, args.rootfs, gq, Path(clones) / str(i),
                                                args.ksm),
                    [int(s) for s in args.qemu_steps.split(",")], args, probe_them=False)
    finally:
        PROCS.kill_all()
        if ksm_saved:
            # run=2 unmerges what was merged, then the saved state comes back.
            (KSM / "run").write_text("2")
            (KSM / "pages_to_scan").write_text(ksm_saved["pages_to_scan"])
            (KSM / "run").write_text(ksm_saved["run"])
    if args.prepare:
        return
    if "ember" in out:
        held = [r["n"] for r in out["ember"] if r.get("held")]
        out["ember_max_held"] = max(held) if held else 0
        print(f"Ember: held {out['ember_max_held']} idle VMs; restore to the agent's answer "
              f"{fmt(out.get('ember_restore_to_answer_ms'), '{:.0f}')} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
