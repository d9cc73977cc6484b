#!/usr/bin/python3
"""Snapshot figures of a real Linux guest with virtio-net, for 128 MiB and
1 GiB: snapshot create time (Full, and Diff after the guest answered a few
pings), and snapshot load to the first KVM_RUN and to the guest answering
ping, over --loads fresh Ember processes each. Needs root: the guest's TAP
lives in a network namespace this program creates and deletes. Prints a
table and writes JSON (--json FILE); asserts nothing.

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
from test_net import add_tap, new_netns, sh  # noqa: E402

HOST_IP, GUEST_IP = "172.31.0.1", "172.31.0.2"
BOOT_ARGS = ("console=ttyS0 reboot=k panic=1 pci=off ember_idle "
             f"ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off")


NETNS = None  # made by main


def ping_once(ns):
    return sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", GUEST_IP,
              check=False).returncode == 0


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
        a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib,
                                             "track_dirty_pages": True})
        a.request("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                                      "guest_mac": "aa:fc:00:00:00:01"})
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
        # A Diff on top, after the guest answered a few pings.
        a.request("PATCH", "/vm", {"state": "Resumed"})
        for _ in range(3):
            ping_once(NETNS)
        a.request("PATCH", "/vm", {"state": "Paused"})
        status, reply = a.request("PUT", "/snapshot/create", {
            "snapshot_path": str(d / "diff.snap"), "mem_file_path": str(d / "diff.mem"),
            "snapshot_type": "Diff"})
        if status != 204:
            raise RuntimeError(reply)
        diff = [float(x) for x in re.findall(r"snapshot created \(Diff\).* in ([\d.]+) ms", a.log())][-1]
        diff_bytes = (d / "diff.mem").stat().st_blocks * 512
        return {"create_wall_ms": wall, "create_ms": own, "diff_create_ms": diff,
                "diff_bytes": diff_bytes}
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
        while not ping_once(NETNS):
            if time.monotonic() - t > 30:
                raise TimeoutError("the restored guest never answered ping")
        pinged = time.monotonic()
        return {"load_to_first_kvm_run_ms": (first - t) * 1e3, "load_ms": own,
                "load_to_ping_ms": (pinged - t) * 1e3}
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
    global NETNS
    NETNS = new_netns("ember-snapbench")
    try:
        add_tap(NETNS, "tap0", HOST_IP)
        for mib in [int(s) for s in args.sizes.split(",")]:
            with tempfile.TemporaryDirectory(prefix="ember-snap-bench-") as d:
                d = Path(d)
                wrapper = d / "ember-in-netns"
                wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {NETNS} "
                                   f"{Path(args.ember).resolve()} \"$@\"\n")
                wrapper.chmod(0o755)
                created = make_snapshot(wrapper, args.kernel, args.initrd, mib, d)
                loads = [load_once(wrapper, d, i) for i in range(args.loads)]
                results[str(mib)] = {
                    **created, "load_ms": summary([l["load_ms"] for l in loads]),
                    "load_to_first_kvm_run_ms": summary([l["load_to_first_kvm_run_ms"] for l in loads]),
                    "load_to_ping_ms": summary([l["load_to_ping_ms"] for l in loads])}
    finally:
        sh("ip", "netns", "del", NETNS, check=False)
    print(f"{'guest':>8} {'Full':>9} {'Diff':>9} {'diff size':>10} {'load':>8} "
          f"{'to first KVM_RUN':>17} {'to ping':>9}")
    for mib, r in results.items():
        f, p = r["load_to_first_kvm_run_ms"], r["load_to_ping_ms"]
        print(f"{mib + ' MiB':>8} {r['create_ms']:>6.1f} ms {r['diff_create_ms']:>6.1f} ms "
              f"{r['diff_bytes'] / 2**20:>6.2f} MiB {r['load_ms']['median']:>5.2f} ms "
              f"{f['median']:>8.3f} ms ({f['min']:.2f}-{f['max']:.2f}) {p['median']:>6.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
