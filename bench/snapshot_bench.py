#!/usr/bin/python3
"""Snapshot figures of a real Linux guest, for 128 MiB and 1 GiB: snapshot
create time (Full), and snapshot load to the first KVM_RUN, over --loads
fresh Ember processes each. Prints a table and writes JSON (--json FILE);
asserts nothing.

    bench/snapshot_bench.py --loads 10 --json snapshot.json

Load is timed from sending PUT /snapshot/load (on an open connection) to
the first KVM_RUN that Ember logs (both on the monotonic clock); Ember
also logs its own load time (state file read and checked, VM rebuilt).
Guest memory is mapped from the memory file MAP_PRIVATE, so pages load on
first touch and the load itself does not depend on the memory size.
"""

import argparse
import json
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from test_api import Api  # noqa: E402  (the integration tests' API client)

BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off ember_idle"


def log_value(api, pattern, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, api.log())
        if m:
            return float(m.group(1))
        time.sleep(0.001)
    raise TimeoutError(pattern)


def make_snapshot(ember, kernel, initrd, mem_mib, d):
    a = Api(ember, d)
    try:
        a.request("PUT", "/boot-source", {"kernel_image_path": str(kernel),
                                          "initrd_path": str(initrd), "boot_args": BOOT_ARGS})
        a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib})
        a.request("PUT", "/actions", {"action_type": "InstanceStart"})
        deadline = time.monotonic() + 300
        while "Run /init as init process" not in a.console():
            if time.monotonic() > deadline:
                raise TimeoutError("the guest did not boot")
            time.sleep(0.5)
        a.request("PATCH", "/vm", {"state": "Paused"})
        t = time.monotonic()
        status, reply = a.request("PUT", "/snapshot/create", {
            "snapshot_path": str(d / "vm.snap"), "mem_file_path": str(d / "vm.mem")})
        wall = (time.monotonic() - t) * 1e3
        if status != 204:
            raise RuntimeError(reply)
        own = log_value(a, r"snapshot created .* in ([\d.]+) ms")
        return {"create_wall_ms": wall, "create_ms": own}
    finally:
        a.stop()


def load_once(ember, d, i):
    w = d / f"load{i}"
    w.mkdir()
    a = Api(ember, w)
    try:
        # On a socket of our own: a curl process would cost more than the load.
        body = json.dumps({
            "snapshot_path": str(d / "vm.snap"),
            "mem_backend": {"backend_type": "File", "backend_path": str(d / "vm.mem")},
            "resume_vm": True})
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(a.sock)
        t = time.monotonic()
        s.sendall((f"PUT /snapshot/load HTTP/1.1\r\nHost: localhost\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        reply = s.recv(4096)
        s.close()
        if b" 204 " not in reply.split(b"\r\n")[0]:
            raise RuntimeError(reply)
        first = log_value(a, r"first KVM_RUN at ([\d.]+) ms monotonic") / 1e3
        own = log_value(a, r"snapshot loaded from .* in ([\d.]+) ms")
        return {"load_to_first_kvm_run_ms": (first - t) * 1e3, "load_ms": own}
    finally:
        a.stop()


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": values}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ember", default=str(ROOT / "build" / "ember"))
    p.add_argument("--kernel", default=str(ROOT / "build" / "guest" / "vmlinux"))
    p.add_argument("--initrd", default=str(ROOT / "build" / "guest" / "initramfs.cpio"))
    p.add_argument("--sizes", default="128,1024")
    p.add_argument("--loads", type=int, default=10)
    p.add_argument("--json")
    args = p.parse_args()
    results = {}
    for mib in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="ember-snap-bench-") as d:
            d = Path(d)
            created = make_snapshot(Path(args.ember), args.kernel, args.initrd, mib, d)
            loads = [load_once(Path(args.ember), d, i) for i in range(args.loads)]
            results[str(mib)] = {
                "create_ms": created["create_ms"], "create_wall_ms": created["create_wall_ms"],
                "load_ms": summary([l["load_ms"] for l in loads]),
                "load_to_first_kvm_run_ms": summary([l["load_to_first_kvm_run_ms"] for l in loads])}
    print(f"{'guest':>8} {'create (Full)':>14} {'load (Ember)':>14} {'load request to first KVM_RUN':>32}")
    for mib, r in results.items():
        f = r["load_to_first_kvm_run_ms"]
        print(f"{mib + ' MiB':>8} {r['create_ms']:>11.1f} ms {r['load_ms']['median']:>11.3f} ms "
              f"{f['median']:>14.3f} ms (min {f['min']:.3f}, max {f['max']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
