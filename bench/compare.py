#!/usr/bin/python3
"""Ember beside QEMU's microvm machine, on the same kernel, initramfs and
command line, in one run on one host. Prints a table and writes
docs/benchmarks/results.{json,md}, charts (PNG) and the README's summary
table (bench/readme_table.py).

Figures, each over --runs repetitions (median, min, max):
  - process start to API socket (Ember) / QMP socket (QEMU) ready: wall ms,
    and CPU ms of the whole process (from /proc/PID/task/*/schedstat, ns);
  - VMM memory overhead: RSS and PSS of the process minus its guest-memory
    mapping, 1 vCPU and 128 MiB, once the guest kernel runs init;
  - start request (InstanceStart; QMP `cont` of a QEMU started with -S) to
    the first KVM_RUN, and to the guest's `Run /init` (PVM hosts boot
    slowly: that one only means something on hardware KVM);
  - process start to first KVM_RUN through the API, and with the whole
    configuration at the start (Ember's --config-file, QEMU without -S);
    both again with the kernel and initrd on a tmpfs remounted read-only,
    from which Ember maps them instead of copying (needs root to mount);
  - snapshot restore, 128 MiB and 1 GiB: load request (QMP
    migrate-incoming of a stream saved to a file) to the first KVM_RUN;
  - creation rate and density: N VMMs spawned at once, configured and
    started through their API, VMs per second from spawn to the last first
    KVM_RUN, memory per VM, and whether all of them stopped cleanly;
  - idle density (--idle-steps; bench/density_bench.py): how many idle
    snapshot clones, each answering its agent within 1 s, with their CPU
    and memory; QEMU's clones beside them (--idle-qemu-steps, memory and
    CPU only); the run is appended to OUT/density.json;
  - Ember's device throughput through the host-side virtio driver
    (bench/block_bench.cc, net_bench.cc); QEMU's devices cannot be driven
    that way, so that row has no QEMU column.

First KVM_RUN: Ember logs it (monotonic clock); QEMU traces every vCPU
ioctl (-trace kvm_vcpu_ioctl -msg timestamp=on, wall clock, converted).

    tools/devtool bench            # builds, then runs this
    tools/devtool bench --only startup,restore   # only those, into results.json
    bench/compare.py --runs 5 --density 10,25,50 --out docs/benchmarks
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import readme_table

ROOT = Path(__file__).resolve().parents[1]
KVM_RUN = "0xae80"
BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off ember_idle"
# What Ember adds by itself on PVM hosts (src/vmm/host.h); QEMU gets the same.
PVM_ARGS = "noxsave clearcpuid=popcnt,cx16,smap,smep noint3selftest pvmuser"
MEM_MIB = 128


def pvm_host():
    return os.path.isdir("/sys/module/kvm_pvm")


def guest_boot_args():
    return BOOT_ARGS + (" " + PVM_ARGS if pvm_host() else "")


def cpu_ms(pid):
    """CPU time of every thread of `pid` so far, in ms (schedstat is ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e6


def memory_mib(pid, guest_mib):
    """(RSS, PSS) of the process without its guest memory, and with it.

    The guest's RAM is the run of adjacent anonymous mappings as large as
    the guest (QEMU adds an alignment page or two; Ember's one mapping is
    split where madvise gave the kernel's range huge pages). Hugetlbfs
    memory (/anon_hugepage) is anonymous too, and its pages, which smaps
    leaves out of Rss and Pss, count in both."""
    maps = []  # [lo, hi, anonymous, {"Rss": kib, "Pss": kib}]
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            anonymous = (len(fields) < 6 or fields[5].startswith("[anon:")
                         or fields[5] == "/anon_hugepage")
            maps.append([lo, hi, anonymous, {}])
        elif line.startswith("Rss:") or line.startswith("Pss:"):
            maps[-1][3][line[:3]] = maps[-1][3].get(line[:3], 0) + int(line.split()[1])
        elif line.startswith(("Private_Hugetlb:", "Shared_Hugetlb:")):
            for key in ("Rss", "Pss"):
                maps[-1][3][key] = maps[-1][3].get(key, 0) + int(line.split()[1])
    guest = set()
    for i in range(len(maps)):
        if not maps[i][2]:
            continue
        size = 0
        for j in range(i, len(maps)):
            # File mappings inside: a kernel on a read-only file system is
            # mapped from its file (src/vmm/boot.h); the ends are anonymous.
            if j > i and maps[j][0] != maps[j - 1][1]:
                break
            size += maps[j][1] - maps[j][0]
            if maps[j][2] and guest_mib << 20 <= size <= (guest_mib + 4) << 20:
                guest.update(range(i, j + 1))
                break
            if size > (guest_mib + 4) << 20:
                break
    def total(key, only_guest=False):
        return sum(m[3].get(key, 0) for k, m in enumerate(maps)
                   if not only_guest or k in guest) / 1024
    return {"rss_mib": total("Rss") - total("Rss", True),
            "pss_mib": total("Pss") - total("Pss", True),
            "total_pss_mib": total("Pss")}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.0005)
    raise TimeoutError(what)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


class Ember:
    name = "Ember"

    def __init__(self, binary, workdir, kernel, initrd, boot_args, direct=False,
                 mem_mib=MEM_MIB):
        """`direct`: the whole configuration in --config-file, no API."""
        self.mem_mib = mem_mib
        self.dir = Path(workdir)
        self.sock = str(self.dir / "api.sock")
        self.log_path = self.dir / "ember.log"
        self.console_path = self.dir / "console.out"
        self.kernel, self.initrd, self.boot_args = kernel, initrd, boot_args
        args = ["--api-sock", self.sock]
        if direct:
            config = self.dir / "vm.json"
            config.write_text(json.dumps({
                "boot-source": {"kernel_image_path": str(kernel), "initrd_path": str(initrd),
                                "boot_args": boot_args},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": mem_mib}}))
            args = ["--no-api", "--config-file", str(config)]
        with open(self.console_path, "wb") as out, open(self.log_path, "wb") as err:
            self.t_spawn = time.monotonic()
            self.proc = subprocess.Popen([binary, *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def wait_ready(self):
        s = wait_for(lambda: connect(self.sock), 10, "Ember's API socket")
        t = time.monotonic()
        self.conn = s
        return t - self.t_spawn, cpu_ms(self.proc.pid)

    def request(self, method, path, body=None):
        data = json.dumps(body) if body is not None else ""
        self.conn.sendall((f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                           f"{data}").encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += self.conn.recv(4096)
        head, rest = reply.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1)) if \
            re.search(rb"Content-Length", head, re.I) else 0
        while len(rest) < length:
            rest += self.conn.recv(4096)
        status = int(head.split()[1])
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {rest!r}")

    def configure(self):
        self.request("PUT", "/boot-source", {"kernel_image_path": str(self.kernel),
                                             "initrd_path": str(self.initrd),
                                             "boot_args": self.boot_args})
        self.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": self.mem_mib})

    def start(self):
        t = time.monotonic()
        self.request("PUT", "/actions", {"action_type": "InstanceStart"})
        return t

    def first_kvm_run(self):
        m = re.search(r"first KVM_RUN at ([\d.]+) ms monotonic", self.log_path.read_text())
        return float(m.group(1)) / 1000 if m else None

    def save(self, path):
        self.request("PATCH", "/vm", {"state": "Paused"})
        self.request("PUT", "/snapshot/create", {"snapshot_path": f"{path}.snap",
                                                 "mem_file_path": f"{path}.mem"})

    def restore(self, path):
        """Sends the load; returns when it was sent."""
        t = time.monotonic()
        self.request("PUT", "/snapshot/load", {
            "snapshot_path": f"{path}.snap", "resume_vm": True,
            "mem_backend": {"backend_type": "File", "backend_path": f"{path}.mem"}})
        return t

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60) == 128 + signal.SIGTERM


class Qemu:
    name = "QEMU"

    def __init__(self, binary, workdir, kernel, initrd, boot_args, direct=False, incoming=False,
                 mem_mib=MEM_MIB):
        """`direct`: runs at once (no -S); `incoming`: waits for a migration
        stream (a saved VM) and runs once it is in."""
        self.dir = Path(workdir)
        self.sock = str(self.dir / "qmp.sock")
        self.log_path = self.dir / "qemu.log"
        self.console_path = self.dir / "console.out"
        cmd = [binary, "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off",
               "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-smp", "1",
               "-m", f"{mem_mib}m", "-nodefaults", "-no-user-config", "-nographic",
               "-no-reboot", "-serial", f"file:{self.console_path}", "-kernel", str(kernel),
               "-initrd", str(initrd), "-append", boot_args, *([] if direct or incoming else ["-S"]),
               *(["-incoming", "defer"] if incoming else []),
               "-qmp", f"unix:{self.sock},server=on,wait=off",
               "-trace", "kvm_vcpu_ioctl", "-msg", "timestamp=on"]
        with open(self.log_path, "wb") as err:
            self.t_spawn = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def wait_ready(self):
        s = wait_for(lambda: connect(self.sock), 30, "QEMU's QMP socket")
        self.conn = s
        self.reader = s.makefile("r")
        self.reader.readline()  # the greeting: QMP is ready
        t = time.monotonic()
        return t - self.t_spawn, cpu_ms(self.proc.pid)

    def qmp(self, command):
        self.conn.sendall((json.dumps({"execute": command}) + "\n").encode())
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply or "error" in reply:
                return reply

    def configure(self):
        self.qmp("qmp_capabilities")

    def start(self):
        t = time.monotonic()
        self.qmp("cont")
        return t

    def first_kvm_run(self):
        # "PID@SECONDS.MICROS:kvm_vcpu_ioctl cpu_index 0, type 0xae80, ..." (wall clock)
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f"type {KVM_RUN}" in line:
                wall = float(line.split("@", 1)[1].split(":", 1)[0])
                return wall - (time.time() - time.monotonic())
        return None

    def save(self, path):
        self.qmp("stop")
        self.qmp_args("migrate", {"uri": f"exec:cat > {path}.qemu"})
        wait_for(lambda: self.migration_over(), 60, "QEMU: migration to a file")

    def restore(self, path):
        """Reads the stream, then `cont` (it was saved stopped, as Ember's)."""
        t = time.monotonic()
        self.qmp_args("migrate-incoming", {"uri": f"exec:cat {path}.qemu"})
        wait_for(lambda: self.migration_over(), 60, "QEMU: migration from a file")
        self.qmp("cont")
        return t

    def qmp_args(self, command, arguments):
        self.conn.sendall((json.dumps({"execute": command, "arguments": arguments}) +
                           "\n").encode())
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply or "error" in reply:
                return reply

    def migration_over(self):
        status = self.qmp("query-migrate")["return"].get("status")
        if status == "failed":
            raise RuntimeError("QEMU: migration failed")
        return status == "completed"

    def stop(self):
        try:
            self.qmp("quit")
        except (OSError, ValueError):
            pass
        return self.proc.wait(timeout=60) == 0


def console_line_time(vm, text, timeout):
    def seen():
        try:
            return text in vm.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return False
    wait_for(seen, timeout, f"{vm.name}: '{text}' on the console")
    return time.monotonic()


def api_start(vm):
    """Waits for the API, configures and starts `vm`; the start-up figures."""
    ready_s, ready_cpu = vm.wait_ready()
    vm.configure()
    t_start = vm.start()
    t_answered = time.monotonic()
    first = wait_for(vm.first_kvm_run, 30, f"{vm.name}: first KVM_RUN")
    return t_start, {"ready_wall_ms": ready_s * 1e3, "ready_cpu_ms": ready_cpu,
                     "start_to_first_kvm_run_ms": (first - t_start) * 1e3,
                     "start_answered_ms": (t_answered - t_start) * 1e3,
                     "spawn_to_first_kvm_run_ms": (first - vm.t_spawn) * 1e3}


def one_life(cls, binary, kernel, initrd, boot_args, boot_timeout):
    """One VM: start-up, start-to-KVM_RUN, boot to init, memory overhead."""
    with tempfile.TemporaryDirectory(prefix="ember-compare-") as d:
        vm = cls(binary, d, kernel, initrd, boot_args)
        try:
            t_start, r = api_start(vm)
            t_init = console_line_time(vm, "Run /init as init process", boot_timeout)
            time.sleep(1)  # init runs; let the VMM settle
            mem = memory_mib(vm.proc.pid, MEM_MIB)
            clean = vm.stop()
        finally:
            if vm.proc.poll() is None:
                vm.proc.kill()
                vm.proc.wait()
        return {**r, "start_to_init_ms": (t_init - t_start) * 1e3,
                "rss_overhead_mib": mem["rss_mib"], "pss_overhead_mib": mem["pss_mib"],
                "clean_stop": clean}


QUICK_KEYS = ("ready_wall_ms", "ready_cpu_ms", "start_to_first_kvm_run_ms", "start_answered_ms",
              "spawn_to_first_kvm_run_ms", "direct_to_first_kvm_run_ms",
              "spawn_copied_to_first_kvm_run_ms", "direct_copied_to_first_kvm_run_ms")


def quick_life(cls, binary, kernel, initrd, boot_args, held=None):
    """The start-up figures alone: configured through the API and started,
    stopped at the first KVM_RUN; then the same from a configuration file;
    then both again with `held`'s (kernel, initrd) if given."""
    def api(kernel, initrd):
        with tempfile.TemporaryDirectory(prefix="ember-compare-") as d:
            vm = cls(binary, d, kernel, initrd, boot_args)
            try:
                return api_start(vm)[1]
            finally:
                vm.proc.kill()
                vm.proc.wait()
    r = api(kernel, initrd)
    r["direct_to_first_kvm_run_ms"] = direct_life(cls, binary, kernel, initrd, boot_args)
    if held:
        r["spawn_copied_to_first_kvm_run_ms"] = api(*held)["spawn_to_first_kvm_run_ms"]
        r["direct_copied_to_first_kvm_run_ms"] = direct_life(cls, binary, *held, boot_args)
    return r


@contextlib.contextmanager
def copies_held_for_writing(*files):
    """Copies of the files, each kept open for writing meanwhile: Ember
    cannot lease them (src/common/file_lease.h), so it copies them into
    guest memory instead of mapping them, as it did before leases."""
    with tempfile.TemporaryDirectory(prefix="ember-compare-held-") as d:
        copies = []
        for f in files:
            shutil.copy(f, d)
            copies.append(Path(d) / Path(f).name)
        time.sleep(0.05)  # past a file-system clock tick: the stamps settle
        with contextlib.ExitStack() as stack:
            for c in copies:
                stack.enter_context(open(c, "ab"))
            yield copies


def direct_life(cls, binary, kernel, initrd, boot_args):
    """Process start to first KVM_RUN with the whole configuration given at
    the start: Ember's --config-file, QEMU's command line without -S."""
    with tempfile.TemporaryDirectory(prefix="ember-compare-") as d:
        vm = cls(binary, d, kernel, initrd, boot_args, direct=True)
        try:
            first = wait_for(vm.first_kvm_run, 30, f"{vm.name}: first KVM_RUN")
        finally:
            vm.proc.kill()
            vm.proc.wait()
        return (first - vm.t_spawn) * 1e3


def restore_lives(cls, binary, kernel, initrd, boot_args, mib, runs):
    """Snapshot restore: one VM saved 1 s after its start (Ember: Full
    snapshot, memory file mapped private at load; QEMU: migration stream to a
    file, read whole by -incoming), then `runs` fresh processes restore it:
    ms from the load request (QMP migrate-incoming) to the first KVM_RUN."""
    with tempfile.TemporaryDirectory(prefix="ember-compare-snap-") as d:
        vm = cls(binary, d, kernel, initrd, boot_args, mem_mib=mib)
        try:
            vm.wait_ready()
            vm.configure()
            vm.start()
            wait_for(vm.first_kvm_run, 30, f"{vm.name}: first KVM_RUN")
            time.sleep(1)
            vm.save(f"{d}/saved")
        finally:
            vm.proc.kill()
            vm.proc.wait()
        out = []
        for i in range(runs):
            work = Path(d) / str(i)
            work.mkdir()
            extra = {"incoming": True} if cls is Qemu else {}
            vm = cls(binary, work, kernel, initrd, boot_args, mem_mib=mib, **extra)
            try:
                vm.wait_ready()
                if cls is Qemu:
                    vm.qmp("qmp_capabilities")
                t = vm.restore(f"{d}/saved")
                first = wait_for(vm.first_kvm_run, 60, f"{vm.name}: first KVM_RUN")
                out.append((first - t) * 1e3)
            finally:
                vm.proc.kill()
                vm.proc.wait()
        return out


def mem_available_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0


def density(cls, binary, kernel, initrd, boot_args, n):
    """N VMs at once: spawn, configure and start all, until every one ran."""
    with tempfile.TemporaryDirectory(prefix="ember-density-") as d:
        avail_before = mem_available_mib()
        t0 = time.monotonic()
        vms = []
        for i in range(n):
            path = Path(d) / str(i)
            path.mkdir()
            vms.append(cls(binary, path, kernel, initrd, boot_args))
        try:
            for vm in vms:
                vm.wait_ready()
                vm.configure()
            t_start = time.monotonic()
            threads = [threading.Thread(target=vm.start) for vm in vms]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            firsts = [wait_for(vm.first_kvm_run, 120, f"{vm.name}: first KVM_RUN") for vm in vms]
            t_end = max(firsts)
            mems = [memory_mib(vm.proc.pid, MEM_MIB) for vm in vms]
            pss = sum(m["total_pss_mib"] for m in mems)
            overhead = sum(m["pss_mib"] for m in mems)
            avail_after = mem_available_mib()
            clean = sum(vm.stop() for vm in vms)
        finally:
            for vm in vms:
                if vm.proc.poll() is None:
                    vm.proc.kill()
                    vm.proc.wait()
        return {"n": n, "vms_per_s_from_spawn": n / (t_end - t0),
                "vms_per_s_from_start": n / (t_end - t_start),
                "pss_per_vm_mib": pss / n, "vmm_pss_per_vm_mib": overhead / n,
                "host_mem_per_vm_mib": (avail_before - avail_after) / n,
                "clean_stops": clean}


def device_throughput(build):
    """Ember's devices through the host-side driver (Google Benchmark):
    label -> median and stddev of 3 repetitions."""
    out = {}
    runs = [(build / "ember_bench_block",
             {"virtio-blk 4 KiB random read, Async (k IOPS)": ("BM_Block/async:1/write:0/bytes:4096", "items_per_second", 1e-3),
              "virtio-blk 1 MiB sequential read, Async (GB/s)": ("BM_Block/async:1/write:0/bytes:1048576", "bytes_per_second", 1e-9)}),
            (build / "ember_bench_net",
             {"virtio-net tx, 64 B frames (Mpps)": ("BM_NetTx/frame_bytes:64", "items_per_second", 1e-6),
              "virtio-net tx, 1500 B frames (Gbit/s)": ("BM_NetTx/frame_bytes:1500", "bytes_per_second", 8e-9),
              "virtio-net rx, 64 B frames (Mpps)": ("BM_NetRx/frame_bytes:64", "items_per_second", 1e-6)})]
    for binary, wanted in runs:
        if not binary.exists():
            continue
        try:
            text = subprocess.run([str(binary), "--benchmark_format=json",
                                   "--benchmark_repetitions=3",
                                   "--benchmark_report_aggregates_only=true"],
                                  capture_output=True, text=True, timeout=600, check=True).stdout
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            print(f"{binary.name} failed: {e}", file=sys.stderr)
            continue
        rows = json.loads(text)["benchmarks"]
        for label, (name, counter, scale) in wanted.items():
            agg = {r["aggregate_name"]: r for r in rows if "aggregate_name" in r and
                   (r["run_name"] == name or r["run_name"].startswith(name + "/"))}
            if "median" in agg and counter in agg["median"]:
                out[label] = {"median": agg["median"][counter] * scale,
                              "stddev": agg.get("stddev", {}).get(counter, 0) * scale}
    return out


def idle_density(args, density_json):
    """Runs bench/density_bench.py and appends its run to density_json
    (the README's idle-density row is the run there that held the most)."""
    with tempfile.TemporaryDirectory(prefix="ember-idle-") as d:
        got = Path(d) / "run.json"
        cmd = [sys.executable, str(ROOT / "bench" / "density_bench.py"), "--ember", args.ember,
               "--kernel", args.kernel, "--steps", args.idle_steps,
               "--qemu-steps", args.idle_qemu_steps, "--label", "tools/devtool bench",
               "--json", str(got)]
        # Its table goes to our output; a failed run is reported, not fatal.
        if subprocess.run(cmd).returncode != 0 or not got.exists():
            print("idle density: bench/density_bench.py failed; density.json unchanged",
                  file=sys.stderr)
            return
        run = json.loads(got.read_text())
    run["run"] = f"bench/density_bench.py --steps {args.idle_steps}" + (
        f" --qemu-steps {args.idle_qemu_steps}" if args.idle_qemu_steps else "")
    data = json.loads(density_json.read_text()) if density_json.exists() else {"runs": []}
    data["measured"] = f"{datetime.date.today()}, bench/density_bench.py, one run each"
    data["runs"].append(run)
    density_json.write_text(json.dumps(data, indent=1) + "\n")


def summarize(samples):
    values = [s for s in samples if s is not None]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": values}


def machine_info(kernel, qemu=True):
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    m = re.search(rb"Linux version [!-~]+", Path(kernel).read_bytes())
    if qemu:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "host_kernel": platform.release(), "cpu": cpu,
            "cores": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PHYS_PAGES") *
                                                      os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
            "kvm": "PVM (software)" if pvm_host() else "hardware",
            "guest_kernel": m.group(0).decode() if m else str(kernel), "qemu": qemu}


LIFE_ROWS = [
    ("ready_wall_ms", "process start to API/QMP socket ready, wall", "ms"),
    ("ready_cpu_ms", "process start to API/QMP socket ready, CPU", "ms"),
    ("rss_overhead_mib", "VMM RSS minus guest memory (1 vCPU, 128 MiB)", "MiB"),
    ("pss_overhead_mib", "VMM PSS minus guest memory (1 vCPU, 128 MiB)", "MiB"),
    ("start_to_first_kvm_run_ms", "start request to first KVM_RUN", "ms"),
    ("start_answered_ms", "start request to its answer (Ember's 204, QEMU's `cont` return), as the client sees it", "ms"),
    ("spawn_to_first_kvm_run_ms", "process start to first KVM_RUN (configured through the API)", "ms"),
    ("direct_to_first_kvm_run_ms", "process start to first KVM_RUN (Ember --config-file, QEMU without -S)", "ms"),
    ("spawn_copied_to_first_kvm_run_ms", "the same through the API, kernel and initrd held open for writing (Ember copies them)", "ms"),
    ("direct_copied_to_first_kvm_run_ms", "the same from --config-file / without -S, kernel and initrd held open for writing", "ms"),
    ("start_to_init_ms", "start request to guest `Run /init`", "ms"),
]


# Chart labels: short enough to sit under a bar.
SHORT = {"ready_wall_ms": "to socket\nready, wall", "ready_cpu_ms": "to socket\nready, CPU",
         "start_to_first_kvm_run_ms": "start request\nto KVM_RUN",
         "spawn_to_first_kvm_run_ms": "process start\nto KVM_RUN",
         "direct_to_first_kvm_run_ms": "config file\nto KVM_RUN",
         "start_to_init_ms": "start request\nto Run /init",
         "rss_overhead_mib": "RSS", "pss_overhead_mib": "PSS"}


def fmt(s, digits=2):
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def write_markdown(results, path):
    info = results["machine"]
    lines = ["# Ember beside QEMU microvm", "",
             f"Measured {info['date']} on {info['cores']} cores ({info['cpu']}), "
             f"{info['mem_gib']} GiB, host kernel {info['host_kernel']}, KVM: {info['kvm']}; "
             f"guest {info['guest_kernel']}, initramfs, 1 vCPU, {MEM_MIB} MiB, same command line; "
             f"{info['qemu']}. Generated by `tools/devtool bench` (bench/compare.py).", "",
             f"Median (min-max) of {results['runs']} runs each (boot to init, memory), "
             f"Ember and QEMU alternating; the start-up figures and the snapshot loads "
             f"(no guest boot) {results.get('quick_runs', results['runs'])} times each.", "",
             "| figure | Ember | QEMU | QEMU / Ember |", "|---|---|---|---|"]
    for key, label, unit in LIFE_ROWS:
        if key not in results["ember"]:
            continue  # a run from before the figure existed
        e, q = results["ember"][key], results["qemu"][key]
        ratio = q["median"] / e["median"] if e["median"] else float("nan")
        lines.append(f"| {label} ({unit}) | {fmt(e)} | {fmt(q)} | {ratio:.1f}x |")
    lines.append(f"| clean stops | {results['ember']['clean_stops']}/{results['runs']} | "
                 f"{results['qemu']['clean_stops']}/{results['runs']} | |")
    if results.get("restore"):
        for mib, r in results["restore"]["ember"].items():
            e, q = r, results["restore"]["qemu"][mib]
            lines.append(f"| snapshot load request to first KVM_RUN, {mib} MiB (ms) | {fmt(e)} | "
                         f"{fmt(q)} | {q['median'] / e['median']:.1f}x |")
        lines += ["", "Snapshot restore: a VM saved 1 s after its start is restored by fresh "
                  "processes. Ember maps the memory file private (pages load when touched); "
                  "QEMU reads its whole migration stream (`-incoming`, then `cont`)."]
    again = results.get("measured_again", {})
    if again:
        lines += ["", "Measured again by `tools/devtool bench --only` (both VMMs alternating "
                  "in that run), the other figures being from the date above: " +
                  "; ".join(f"{'start-up figures' if k == 'startup' else 'snapshot restores'} "
                            f"on {v}" for k, v in sorted(again.items())) + "."]
    lines += ["", "Creation rate and density: N VMMs spawned at once, configured and started "
              "through their API (QMP), until every one reached its first KVM_RUN.", "",
              "| N | figure | Ember | QEMU |", "|---|---|---|---|"]
    for n in results["density_n"]:
        e, q = results["density"]["ember"][str(n)], results["density"]["qemu"][str(n)]
        for key, label, digits in [("vms_per_s_from_spawn", "VMs/s, spawn to last first KVM_RUN", 1),
                                   ("vms_per_s_per_core", "VMs/s per host core", 1),
                                   ("vms_per_s_from_start", "VMs/s, start requests to last first KVM_RUN", 1),
                                   ("vmm_pss_per_vm_mib", "VMM PSS per VM, guest memory excluded (MiB)", 2),
                                   ("pss_per_vm_mib", "PSS per VM, guest memory touched so far included (MiB)", 2)]:
            lines.append(f"| {n} | {label} | {fmt(e[key], digits)} | {fmt(q[key], digits)} |")
        lines.append(f"| {n} | clean stops | {e['clean_stops']} | {q['clean_stops']} |")
    if results.get("devices"):
        lines += ["", "Ember's devices through the host-side virtio driver (no guest; QEMU's "
                  "devices cannot be driven this way, so there is no QEMU column). Median "
                  "(stddev) of 3 repetitions:", "", "| figure | Ember |", "|---|---|"]
        for label, v in results["devices"].items():
            lines.append(f"| {label} | {v['median']:.3g} ({v['stddev']:.2g}) |")
    lines += ["", "QEMU loads the kernel and builds the machine before `cont` (it was started "
              "with -S and -kernel); Ember prepares the same ahead of InstanceStart once the "
              "configuration names a kernel (builder.h's PreparedVm) and keeps Firecracker's "
              "semantics: a configuration or kernel file changed after that is prepared again "
              "at the start. Process start to first KVM_RUN compares the whole path. The start's "
              "answer is what a client waits for: both VMMs answer once the vCPUs may run; "
              "Ember wakes them after the answer is sent (on a 2-core host a vCPU thread woken "
              "first took the CPU the client was woken on, for a whole time slice)."]
    if info["kvm"] != "hardware":
        lines += ["", "On this PVM host the guest kernel is emulated, so `Run /init` takes "
                  "seconds for both VMMs and says nothing about real hosts; the other figures "
                  "do not depend on the guest's speed."]
    lines += ["", "![start-up](startup.png)", "", "![memory](memory.png)", "",
              "![density](density.png)", ""]
    path.write_text("\n".join(lines))


def write_charts(results, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python3-matplotlib is missing: no charts", file=sys.stderr)
        return

    def bars(ax, keys, title, unit):
        labels = [SHORT[k] for k in keys]
        x = range(len(keys))
        for i, (who, color) in enumerate([("ember", "#d9480f"), ("qemu", "#1c7ed6")]):
            med = [results[who][k]["median"] for k in keys]
            lo = [results[who][k]["median"] - results[who][k]["min"] for k in keys]
            hi = [results[who][k]["max"] - results[who][k]["median"] for k in keys]
            ax.bar([p + i * 0.4 for p in x], med, 0.4, yerr=[lo, hi], capsize=4, color=color,
                   label="Ember" if who == "ember" else "QEMU microvm")
        ax.set_xticks([p + 0.2 for p in x])
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bars(axes[0], ["ready_wall_ms", "ready_cpu_ms", "start_to_first_kvm_run_ms",
                   "spawn_to_first_kvm_run_ms", "direct_to_first_kvm_run_ms"],
         "start-up (lower is better)", "ms")
    axes[0].set_yscale("log")
    bars(axes[1], ["start_to_init_ms"], "start to Run /init (PVM: not meaningful)", "ms")
    fig.tight_layout()
    fig.savefig(out / "startup.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4))
    bars(ax, ["rss_overhead_mib", "pss_overhead_mib"], "VMM memory overhead (lower is better)",
         "MiB")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ns = results["density_n"]
    for who, color, label in [("ember", "#d9480f", "Ember"), ("qemu", "#1c7ed6", "QEMU microvm")]:
        d = results["density"][who]
        for ax, key, title in [(axes[0], "vms_per_s_from_spawn", "VMs/s to first KVM_RUN"),
                               (axes[1], "vmm_pss_per_vm_mib", "VMM PSS per VM (MiB)")]:
            med = [d[str(n)][key]["median"] for n in ns]
            err = [[d[str(n)][key]["median"] - d[str(n)][key]["min"] for n in ns],
                   [d[str(n)][key]["max"] - d[str(n)][key]["median"] for n in ns]]
            ax.errorbar(ns, med, yerr=err, marker="o", capsize=4, color=color, label=label)
            ax.set_xlabel("microVMs started at once")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "density.png", dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ember", default=str(ROOT / "build" / "ember"))
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--kernel", default=str(ROOT / "build" / "guest" / "vmlinux"))
    p.add_argument("--initrd", default=str(ROOT / "build" / "guest" / "initramfs.cpio"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--quick-runs", type=int, default=10,
                   help="samples of the figures that boot no guest: --config-file start, restore")
    p.add_argument("--density", default="10,25,50")
    p.add_argument("--density-runs", type=int, default=2)
    p.add_argument("--idle-steps", default="50,100,250",
                   help="idle density steps (bench/density_bench.py); empty: skip")
    p.add_argument("--idle-qemu-steps", default="10,50")
    p.add_argument("--boot-timeout", type=float, default=300)
    p.add_argument("--no-devices", action="store_true", help="skip the device benchmarks")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--only", default="",
                   help="startup and/or restore (comma-separated): measure only those figures "
                   "(both VMMs, --quick-runs each) into OUT/results.json, keeping its others")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite results.md, the charts and the README's table from "
                   "OUT/results.json")
    args = p.parse_args()
    if args.runs < 1 or args.quick_runs < 1:
        sys.exit("--runs and --quick-runs must be at least 1")
    if args.report_only:
        out = Path(args.out)
        results = json.loads((out / "results.json").read_text())
        write_markdown(results, out / "results.md")
        write_charts(results, out)
        readme_table.rewrite(ROOT / "README.md", results, out / "density.json")
        return
    qemu = shutil.which(args.qemu)
    if qemu is None:
        sys.exit(f"{args.qemu} is missing (tools/install-deps.sh installs qemu-system-x86)")
    kernel, initrd = Path(args.kernel).resolve(), Path(args.initrd).resolve()
    boot_args = guest_boot_args()
    vmms = {"ember": (Ember, args.ember), "qemu": (Qemu, qemu)}
    if args.only:
        only = set(args.only.split(","))
        if not only <= {"startup", "restore"}:
            sys.exit("--only takes startup and/or restore")
        out = Path(args.out)
        results = json.loads((out / "results.json").read_text())
        again = results.setdefault("measured_again", {})
        if "startup" in only:
            quick = measure_startup(vmms, kernel, initrd, boot_args, args.quick_runs)
            for who in vmms:
                results[who].update({k: summarize([r[k] for r in quick[who]])
                                     for k in QUICK_KEYS if k in quick[who][0]})
            again["startup"] = machine_info(kernel)["date"]
        if "restore" in only:
            results["restore"] = measure_restores(vmms, kernel, initrd, boot_args, args.quick_runs)
            again["restore"] = machine_info(kernel)["date"]
        write_report(results, out)
        return

    lives = {"ember": [], "qemu": []}
    for run in range(args.runs):
        for who, (cls, binary) in vmms.items():
            r = one_life(cls, binary, kernel, initrd, boot_args, args.boot_timeout)
            lives[who].append(r)
            print(f"run {run + 1}/{args.runs} {who}: " +
                  ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r.items()), flush=True)
    # The start-up figures need no guest boot, so they are sampled more:
    # a few samples land on this host's slow first touches of memory and
    # would move a median of 3.
    quick = measure_startup(vmms, kernel, initrd, boot_args, args.quick_runs)
    results = {"machine": machine_info(kernel), "runs": args.runs,
               "quick_runs": args.quick_runs, "boot_args": boot_args}
    for who in vmms:
        samples = {key: [r[key] for r in (quick if key in QUICK_KEYS else lives)[who] if key in r]
                   for key, _, _ in LIFE_ROWS}
        # The read-only rows need a mount: absent where this run may not mount.
        results[who] = {key: summarize(v) for key, v in samples.items() if v}
        results[who]["clean_stops"] = sum(r["clean_stop"] for r in lives[who])

    results["restore"] = measure_restores(vmms, kernel, initrd, boot_args, args.quick_runs)

    ns = [int(n) for n in args.density.split(",") if n]
    results["density_n"] = ns
    results["density"] = {who: {} for who in vmms}
    for n in ns:
        for who, (cls, binary) in vmms.items():
            rs = [density(cls, binary, kernel, initrd, boot_args, n)
                  for _ in range(args.density_runs)]
            for r in rs:
                r["vms_per_s_per_core"] = r["vms_per_s_from_spawn"] / os.cpu_count()
                print(f"density {n} {who}: " + ", ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                    flush=True)
            results["density"][who][str(n)] = {
                k: summarize([r[k] for r in rs]) for k in rs[0] if k not in ("n", "clean_stops")}
            results["density"][who][str(n)]["clean_stops"] = \
                f"{sum(r['clean_stops'] for r in rs)}/{n * len(rs)}"
    if not args.no_devices:
        results["devices"] = device_throughput(Path(args.ember).resolve().parent)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.idle_steps:
        idle_density(args, out / "density.json")
    write_report(results, out)


def measure_startup(vmms, kernel, initrd, boot_args, runs):
    quick = {who: [] for who in vmms}
    with copies_held_for_writing(kernel, initrd) as held:
        for i in range(runs):
            for who, (cls, binary) in vmms.items():
                quick[who].append(quick_life(cls, binary, kernel, initrd, boot_args, held))
                print(f"start-up {i + 1}/{runs} {who}: " +
                      ", ".join(f"{k} {v:.3f}" for k, v in quick[who][-1].items()), flush=True)
    return quick


def measure_restores(vmms, kernel, initrd, boot_args, runs):
    restore = {who: {} for who in vmms}
    for mib in (128, 1024):
        for who, (cls, binary) in vmms.items():
            samples = restore_lives(cls, binary, kernel, initrd, boot_args, mib, runs)
            print(f"restore {mib} MiB {who}: " + ", ".join(f"{v:.3f}" for v in samples), flush=True)
            restore[who][str(mib)] = summarize(samples)
    return restore


def write_report(results, out):
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, out / "results.md")
    write_charts(results, out)
    readme_table.rewrite(ROOT / "README.md", results, out / "density.json")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
