#!/usr/bin/python3
"""Snapshot figures of a real Linux guest running the guest agent
(ember-agent on vsock port 1024, the rootfs read-only), for 128 MiB and
1 GiB: snapshot create time, then over --loads fresh Ember processes each,
PUT /snapshot/load to the first KVM_RUN and to the agent's answer to a
request (`ember-exec -- true`, the page-fault tail a user waits for), with
the File and the Uffd (ember-uffd-handler) memory backends, each without
and with a working set (Ember's prefetch extension, docs/working-set.md)
recorded from one restored guest's first request. Prints a table and
writes JSON (--json FILE); asserts nothing.

    bench/snapshot_bench.py --loads 10 --json snapshot.json

Load is timed from sending PUT /snapshot/load (on an open connection) to
the first KVM_RUN that Ember logs (both on the monotonic clock); Ember
also logs its own load time (state file read and checked, VM rebuilt).
With File, guest memory is mapped from the memory file MAP_PRIVATE, so
pages load on first touch and the load itself does not depend on the
memory size. The agent's answer is timed to the end of the first
ember-exec that succeeds (retried every 10 ms while the guest's agent
reopens its listener after the vsock transport reset).
"""

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from test_api import Api  # noqa: E402  (the integration tests' API client)
from conftest import is_pvm_host  # noqa: E402
from guest_shell import shell_boot_args  # noqa: E402

AGENT_PORT = 1024
GUEST_CID = 3


def log_value(api, pattern, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, api.log())
        if m:
            return float(m.group(1))
        time.sleep(0.001)
    raise TimeoutError(pattern)


def agent_answers(ember, uds, timeout=60):
    client = Path(ember).parent / "ember-exec"
    try:
        return subprocess.run([str(client), "--uds", str(uds), "--", "true"],
                              capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def make_snapshot(ember, kernel, rootfs, mem_mib, d):
    a = Api(ember, d)
    try:
        a.request("PUT", "/boot-source", {"kernel_image_path": str(kernel),
                                          "boot_args": shell_boot_args()})
        a.request("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib})
        a.request("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(rootfs),
                                            "is_root_device": True, "is_read_only": True})
        a.request("PUT", "/vsock", {"guest_cid": GUEST_CID, "uds_path": str(d / "v.sock")})
        a.request("PUT", "/actions", {"action_type": "InstanceStart"})
        deadline = time.monotonic() + 600
        while not agent_answers(ember, d / "v.sock"):
            if time.monotonic() > deadline:
                raise TimeoutError("the guest's agent never answered")
            time.sleep(2)
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


def load_once(ember, d, name, backend="File", working_set=None, record=None, agent=True):
    """One restore in a fresh Ember; times in ms from sending the load."""
    w = d / name
    w.mkdir()
    handler = None
    a = Api(ember, w)
    try:
        path = str(d / "vm.mem")
        if backend == "Uffd":
            path = str(w / "uffd.sock")
            args = [str(Path(ember).parent / "ember-uffd-handler"), path, str(d / "vm.mem")]
            if working_set:
                args += ["--working-set", str(working_set), "--snapshot", str(d / "vm.snap")]
            handler = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
            if "listening" not in handler.stdout.readline():
                raise RuntimeError("ember-uffd-handler did not start")
        load = {"snapshot_path": str(d / "vm.snap"),
                "mem_backend": {"backend_type": backend, "backend_path": path},
                "vsock_override": {"uds_path": str(w / "v.sock")}, "resume_vm": True}
        if working_set and backend == "File":
            load["working_set_path"] = str(working_set)
        body = json.dumps(load)
        # On a socket of our own: a curl process would cost more than the load.
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
        out = {"load_to_first_kvm_run_ms": (first - t) * 1e3, "load_ms": own}
        if agent:
            while not agent_answers(ember, w / "v.sock"):
                if time.monotonic() - t > 120:
                    raise TimeoutError("the restored guest's agent never answered")
                time.sleep(0.01)
            out["load_to_agent_answer_ms"] = (time.monotonic() - t) * 1e3
        if record:
            status, reply = a.request("PUT", "/snapshot/working-set", {
                "snapshot_path": str(d / "vm.snap"), "working_set_path": str(record)})
            if status != 204:
                raise RuntimeError(reply)
        return out
    finally:
        a.stop()
        if handler:
            handler.wait(timeout=30)


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "samples": values}


SERIES = [("File", False), ("File", True), ("Uffd", False), ("Uffd", True)]
# On PVM hosts a vCPU never gets its pages through a userfaultfd (README).
UFFD_WORKS = not is_pvm_host()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ember", default=str(ROOT / "build" / "ember"))
    p.add_argument("--kernel", default=str(ROOT / "build" / "guest" / "vmlinux"))
    p.add_argument("--rootfs", default=str(ROOT / "build" / "guest" / "rootfs.ext4"))
    p.add_argument("--sizes", default="128,1024")
    p.add_argument("--loads", type=int, default=10)
    p.add_argument("--no-agent", action="store_true",
                   help="only the load to the first KVM_RUN (File), no agent requests")
    p.add_argument("--uffd", action="store_true",
                   help="run the Uffd series on a PVM host too (they hang there)")
    p.add_argument("--keep", help="make the snapshots in this folder and keep them")
    p.add_argument("--json")
    args = p.parse_args()
    results = {}
    for mib in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="ember-snap-bench-") as tmp:
            d = Path(args.keep) / str(mib) if args.keep else Path(tmp)
            d.mkdir(parents=True, exist_ok=True)
            if not (d / "vm.snap").exists():
                made = make_snapshot(args.ember, args.kernel, args.rootfs, mib, d)
            else:
                made = {}
            run = 0

            def fresh():
                nonlocal run
                run += 1
                return f"load{run}"
            ws = d / "vm.ws"
            r = dict(made)
            if args.no_agent:
                loads = [load_once(args.ember, d, fresh(), agent=False) for _ in range(args.loads)]
                r["File"] = {"load_to_first_kvm_run_ms": summary(
                    [x["load_to_first_kvm_run_ms"] for x in loads]),
                    "load_ms": summary([x["load_ms"] for x in loads])}
            else:
                # One restore of the File backend records the working set.
                load_once(args.ember, d, fresh(), record=ws)
                r["working_set_pages"] = int(re.search(
                    r"working set of (\d+) pages", (d / f"load{run}" / "ember.log").read_text()
                ).group(1))
                for backend, prefetch in SERIES:
                    if backend == "Uffd" and not (UFFD_WORKS or args.uffd):
                        print(f"{mib} MiB: Uffd skipped on this PVM host (--uffd to try)")
                        continue
                    loads = [load_once(args.ember, d, fresh(), backend, ws if prefetch else None)
                             for _ in range(args.loads)]
                    r[backend + (" + working set" if prefetch else "")] = {
                        k: summary([x[k] for x in loads]) for k in loads[0]}
            results[str(mib)] = r
    print(f"{'guest':>8} {'series':<22} {'load':>8} {'to first KVM_RUN':>24} "
          f"{'to agent answer':>24}")
    for mib, r in results.items():
        for name, v in r.items():
            if not isinstance(v, dict):
                continue
            f = v["load_to_first_kvm_run_ms"]
            line = (f"{mib + ' MiB':>8} {name:<22} {v['load_ms']['median']:>5.2f} ms "
                    f"{f['median']:>8.3f} ms ({f['min']:.2f}-{f['max']:.2f})")
            if "load_to_agent_answer_ms" in v:
                g = v["load_to_agent_answer_ms"]
                line += f" {g['median']:>8.1f} ms ({g['min']:.0f}-{g['max']:.0f})"
            print(line)
        if "create_ms" in r:
            print(f"{'':>8} snapshot create {r['create_ms']:.1f} ms; working set "
                  f"{r.get('working_set_pages', 0)} pages")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
