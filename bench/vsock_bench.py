#!/usr/bin/env python3
"""virtio-vsock and the guest agent, one booted guest (rootfs.ext4, 256 MiB):

  connect_ms           CONNECT 1024 to "OK <port>" on the VM's uds_path
                       (the guest agent accepting), p50 and p99 of --connects
  exec_true_ms         ember-exec -- true: connect, exec in the guest, exit
                       status back (median of --execs)
  to_guest_mib_s       ember-exec -- dd of=/dev/null: host stdin to the guest
  to_host_mib_s        ember-exec -- dd if=/dev/zero: guest stdout to the host
  *_vmm_cpu_ms_per_gib CPU of Ember's threads other than the vCPU per GiB moved

On PVM hosts the guest runs emulated; the VMM's CPU per GiB is the figure
that carries over. Prints the figures; writes JSON (--out).

    bench/vsock_bench.py [--mib 256] [--connects 200] [--execs 10] [--out FILE]
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "bench"))
from guest_shell import GuestShell  # noqa: E402
from userspace_bench import non_vcpu_cpu_ms  # noqa: E402

BUILD = ROOT / "build"
EXEC = BUILD / "ember-exec"


def connect_ms(uds):
    t = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(uds))
    s.sendall(b"CONNECT 1024\n")
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            raise ConnectionError(line)
        line += chunk
    elapsed = (time.monotonic() - t) * 1000
    s.close()
    assert line.startswith(b"OK "), line
    return elapsed


def stream(vm, uds, cmd, stdin_bytes=0):
    """Runs `cmd` through ember-exec; returns (MiB/s, VMM CPU ms per GiB, bytes)."""
    cpu0 = non_vcpu_cpu_ms(vm.proc.pid, ("vcpu",))
    t = time.monotonic()
    proc = subprocess.Popen([str(EXEC), "--uds", str(uds), "--", *cmd],
                            stdin=subprocess.PIPE if stdin_bytes else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    moved = stdin_bytes
    if stdin_bytes:
        chunk = b"\0" * (1 << 20)
        for _ in range(stdin_bytes >> 20):
            proc.stdin.write(chunk)
        proc.stdin.close()
        proc.stdout.read()
    else:
        while data := proc.stdout.read(1 << 20):
            moved += len(data)
    assert proc.wait() == 0
    seconds = time.monotonic() - t
    cpu = non_vcpu_cpu_ms(vm.proc.pid, ("vcpu",)) - cpu0
    return moved / seconds / 2**20, cpu * 2**30 / moved, moved


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--execs", type=int, default=10)
    parser.add_argument("--out", default=str(BUILD / "vsock_bench.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uds = Path(tmp) / "v.sock"
        config = {
            "boot-source": {"kernel_image_path": str(BUILD / "guest" / "vmlinux"),
                            "boot_args": "console=ttyS0 reboot=k panic=1 pci=off ember_shell"},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
            "drives": [{"drive_id": "rootfs", "is_root_device": True, "is_read_only": True,
                        "path_on_host": str(BUILD / "guest" / "rootfs.ext4")}],
            "vsock": {"guest_cid": 3, "uds_path": str(uds)}}
        vm = GuestShell(BUILD / "ember", tmp, config)
        try:
            vm.wait_ready(timeout=900)
            deadline = time.monotonic() + 300
            while subprocess.run([str(EXEC), "--uds", str(uds), "--", "true"],
                                 capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, "the agent never answered"
                time.sleep(2)
            connects = sorted(connect_ms(uds) for _ in range(args.connects))
            execs = []
            for _ in range(args.execs):
                t = time.monotonic()
                subprocess.run([str(EXEC), "--uds", str(uds), "--", "true"], check=True)
                execs.append((time.monotonic() - t) * 1000)
            nbytes = args.mib << 20
            to_guest = stream(vm, uds, ["dd", "of=/dev/null", "bs=64k"], stdin_bytes=nbytes)
            to_host = stream(vm, uds, ["dd", "if=/dev/zero", "bs=64k",
                                       f"count={nbytes >> 16}"])
            vm.shutdown(timeout=120)
        finally:
            vm.close()
    figures = {
        "connect_ms": {"p50": connects[len(connects) // 2],
                       "p99": connects[min(len(connects) - 1, len(connects) * 99 // 100)],
                       "min": connects[0], "max": connects[-1]},
        "exec_true_ms": {"median": statistics.median(execs), "min": min(execs),
                         "max": max(execs)},
        "to_guest_mib_s": to_guest[0], "to_guest_vmm_cpu_ms_per_gib": to_guest[1],
        "to_host_mib_s": to_host[0], "to_host_vmm_cpu_ms_per_gib": to_host[1],
    }
    for key, value in figures.items():
        print(f"{key:30} {json.dumps(value)}")
    Path(args.out).write_text(json.dumps(figures, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
