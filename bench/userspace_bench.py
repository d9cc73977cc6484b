#!/usr/bin/env python3
"""Guest user space, Ember beside QEMU microvm, same kernel, root file system
(rootfs.ext4 on virtio-blk) and command line, one run after the other:

  start_to_init_ms   InstanceStart (QMP `cont`) to init's first write from
                     user space ("ember-init: hello" on the console; Ember
                     also logs its boot timer, which init writes just before)
  forkexec_us        the guest's fork + exec + wait of /bin/true (median of
                     20, ember-usercheck forkexec)
  tcp_*_mib_s        a TCP stream through virtio-net and the TAP, guest to
                     host and host to guest (busybox nc in the guest)
  tcp_*_vmm_cpu_ms_per_gib
                     CPU time of the VMM's threads other than the vCPUs (the
                     device and event-loop work) per GiB moved

On PVM hosts the guest runs emulated: its figures are for comparing the two
VMMs, not real hosts. Prints a table; writes JSON (--out).

    bench/userspace_bench.py [--runs 3] [--mib 16] [--out FILE]
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from guest_shell import SerialShell  # noqa: E402

GUEST = ROOT / "build" / "guest"
MEM_MIB = 256
HOST_IP, GUEST_IP, GUEST_MAC = "172.31.0.1", "172.31.0.2", "aa:fc:00:00:00:02"
BOOT_ARGS = (f"console=ttyS0 reboot=k panic=1 pci=off ember_shell "
             f"ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off")
# What Ember adds by itself on PVM hosts (src/vmm/host.h); QEMU gets the same.
PVM_ARGS = "noxsave clearcpuid=popcnt,cx16,smap,smep noint3selftest pvmuser"
HELLO = b"ember-init: hello from user space"


def pvm_host():
    return os.path.isdir("/sys/module/kvm_pvm")


def non_vcpu_cpu_ms(pid, vcpu_prefixes):
    """CPU time of the process's threads whose names do not start with one
    of `vcpu_prefixes`, in ms (schedstat is ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip().startswith(vcpu_prefixes):
                continue
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e6


def unix_http(sock_path, method, path, body):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    data = json.dumps(body)
    s.sendall((f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n{data}").encode())
    reply = s.recv(4096)
    s.close()
    if not reply.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(f"{method} {path}: {reply!r}")


class EmberVm(SerialShell):
    name = "Ember"
    vcpu_threads = ("vcpu",)

    def __init__(self, workdir, ns):
        self.sock = str(Path(workdir) / "api.sock")
        super().__init__(["ip", "netns", "exec", ns, str(ROOT / "build" / "ember"),
                          "--api-sock", self.sock, "--boot-timer"], workdir, "ember.log")
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.01)
        time.sleep(0.05)
        for path, body in [
                ("/boot-source", {"kernel_image_path": str(GUEST / "vmlinux"),
                                  "boot_args": BOOT_ARGS}),
                ("/machine-config", {"vcpu_count": 1, "mem_size_mib": MEM_MIB}),
                ("/drives/rootfs", {"drive_id": "rootfs", "is_root_device": True,
                                    "path_on_host": str(GUEST / "rootfs.ext4"),
                                    "is_read_only": True}),
                ("/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                              "guest_mac": GUEST_MAC})]:
            unix_http(self.sock, "PUT", path, body)

    def start(self):
        t = time.monotonic()
        unix_http(self.sock, "PUT", "/actions", {"action_type": "InstanceStart"})
        return t

    def vmm_pid(self):
        # `ip netns exec` execs the VMM: same pid.
        return self.proc.pid


class QemuVm(SerialShell):
    name = "QEMU"
    vcpu_threads = ("CPU ",)

    def __init__(self, workdir, ns):
        self.qmp_path = str(Path(workdir) / "qmp.sock")
        args = BOOT_ARGS + " root=/dev/vda ro" + (" " + PVM_ARGS if pvm_host() else "")
        cmd = ["ip", "netns", "exec", ns, "qemu-system-x86_64",
               "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off",
               "-enable-kvm", "-cpu", "host,arch-capabilities=off", "-smp", "1",
               "-m", f"{MEM_MIB}m", "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
               "-kernel", str(GUEST / "vmlinux"), "-append", args,
               "-drive", f"id=root,file={GUEST / 'rootfs.ext4'},format=raw,if=none,readonly=on",
               "-device", "virtio-blk-device,drive=root",
               "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
               "-device", f"virtio-net-device,netdev=n0,mac={GUEST_MAC}",
               "-S", "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        super().__init__(cmd, workdir, "qemu.log")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.qmp = socket.socket(socket.AF_UNIX)
                self.qmp.connect(self.qmp_path)
                break
            except OSError:
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.01)
        self.reader = self.qmp.makefile("r")
        self.reader.readline()
        self._qmp("qmp_capabilities")

    def _qmp(self, command):
        self.qmp.sendall((json.dumps({"execute": command}) + "\n").encode())
        while True:
            reply = json.loads(self.reader.readline())
            if "return" in reply or "error" in reply:
                return reply

    def start(self):
        t = time.monotonic()
        self._qmp("cont")
        return t

    def vmm_pid(self):
        return self.proc.pid


def tcp_to_host(vm, ns, nbytes):
    """Guest -> host; returns (MiB/s, VMM CPU ms per GiB)."""
    port = 5001
    server = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", (
        "import socket,sys,time\n"
        f"s=socket.create_server(('0.0.0.0',{port}));print('up',flush=True)\n"
        "c,_=s.accept();n=0;t=None\n"
        "while d:=c.recv(1<<20):\n"
        "  t=t or time.monotonic();n+=len(d)\n"
        "print(n,time.monotonic()-t,flush=True)\n")], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "up"
    mib = nbytes >> 20
    vm.check(f"dd if=/dev/zero of=/tmp/z bs=1M count={mib} 2>/dev/null")
    cpu0 = non_vcpu_cpu_ms(vm.vmm_pid(), vm.vcpu_threads)
    vm.check(f"nc {HOST_IP} {port} < /tmp/z", timeout=900)
    cpu = non_vcpu_cpu_ms(vm.vmm_pid(), vm.vcpu_threads) - cpu0
    n, seconds = server.communicate(timeout=60)[0].split()
    assert int(n) == nbytes, n
    vm.check("rm /tmp/z")
    return nbytes / float(seconds) / 2**20, cpu * 2**30 / nbytes


def tcp_to_guest(vm, ns, nbytes):
    """Host -> guest; returns (MiB/s, VMM CPU ms per GiB)."""
    port = 5002
    sender = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", (
        "import socket,time\n"
        "deadline=time.monotonic()+120\n"
        "while True:\n"
        "  try:\n"
        f"    c=socket.create_connection(('{GUEST_IP}',{port}),timeout=5);break\n"
        "  except OSError:\n"
        "    assert time.monotonic()<deadline\n"
        "    time.sleep(0.2)\n"
        "c.settimeout(600);chunk=bytes(1<<20);t=time.monotonic()\n"
        f"for _ in range({nbytes >> 20}): c.sendall(chunk)\n"
        "c.shutdown(socket.SHUT_WR);c.recv(1)\n"
        "print(time.monotonic()-t,flush=True)\n")], stdout=subprocess.PIPE, text=True)
    cpu0 = non_vcpu_cpu_ms(vm.vmm_pid(), vm.vcpu_threads)
    out = vm.check(f"nc -l -p {port} > /dev/null && echo done", timeout=900)
    seconds = float(sender.communicate(timeout=120)[0])
    cpu = non_vcpu_cpu_ms(vm.vmm_pid(), vm.vcpu_threads) - cpu0
    assert out.strip() == "done"
    return nbytes / seconds / 2**20, cpu * 2**30 / nbytes


def one_run(kind, workdir, ns, nbytes):
    vm = kind(workdir, ns)
    try:
        t0 = vm.start()
        deadline = t0 + 900
        while HELLO not in vm.console_path.read_bytes():
            assert time.monotonic() < deadline and vm.proc.poll() is None, vm.log()
            time.sleep(0.005)
        figures = {"start_to_init_ms": (time.monotonic() - t0) * 1000}
        vm.wait_ready(timeout=900)
        m = re.search(r"boot timer\): ([\d.]+) ms since InstanceStart", vm.log())
        if m:
            figures["boot_timer_ms"] = float(m.group(1))
        out = vm.check("ember-usercheck forkexec 20", timeout=900)
        figures["forkexec_us"] = int(out.split()[1])
        figures["tcp_to_host_mib_s"], figures["tcp_to_host_vmm_cpu_ms_per_gib"] = \
            tcp_to_host(vm, ns, nbytes)
        figures["tcp_to_guest_mib_s"], figures["tcp_to_guest_vmm_cpu_ms_per_gib"] = \
            tcp_to_guest(vm, ns, nbytes)
        try:
            vm.shutdown(timeout=60)
        except subprocess.TimeoutExpired:
            pass  # QEMU microvm has no i8042 reset to end on; close() kills it
        return figures
    finally:
        vm.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=16, help="MiB per TCP stream")
    parser.add_argument("--out", default=str(ROOT / "build" / "userspace_bench.json"))
    args = parser.parse_args()
    ns = f"ember-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    results = {"Ember": [], "QEMU": []}
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
                    ["ip", "addr", "add", f"{HOST_IP}/24", "dev", "tap0"],
                    ["ip", "link", "set", "tap0", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                for kind in (EmberVm, QemuVm):
                    workdir = Path(tmp) / f"{kind.name}-{i}"
                    workdir.mkdir()
                    figures = one_run(kind, workdir, ns, args.mib << 20)
                    print(f"run {i + 1} {kind.name}: {figures}", flush=True)
                    results[kind.name].append(figures)
    finally:
        subprocess.run(["ip", "netns", "del", ns])

    summary = {}
    print(f"\n{'figure':38} {'Ember median (min-max)':>26} {'QEMU median (min-max)':>26}")
    for key in results["Ember"][0]:
        row = {}
        for name in ("Ember", "QEMU"):
            values = [r[key] for r in results[name] if key in r]
            if values:
                row[name] = {"median": statistics.median(values), "min": min(values),
                             "max": max(values)}
        summary[key] = row
        cells = [f"{r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f})" if r else "-"
                 for r in (row.get("Ember"), row.get("QEMU"))]
        print(f"{key:38} {cells[0]:>26} {cells[1]:>26}")
    Path(args.out).write_text(json.dumps({"pvm_host": pvm_host(), "runs": results,
                                          "summary": summary}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
