#!/usr/bin/env python3
"""Containers through containerd, runc beside ember-oci (issue 18), in one
run on this host: Debian's containerd with its own state under /tmp and the
busybox image tests/integration/test_containers.py builds.

  first_line_s   `ctr run --rm IMAGE ID echo first` to the container's first
                 output line: runc, Ember restoring its template snapshot,
                 Ember booting cold (io.ember.boot=cold)
  template_s     making the template snapshot (one boot, once)
  pss_kib        PSS of a running container's process tree (`sleep`):
                 runc's processes; Ember's monitor and VMM with the guest
                 memory it touched; and of a pod's sandbox
  sandbox_start_s
                 `ctr run -d` of a Kubernetes pod's sandbox (CRI's
                 annotations on a `sleep`) until its task runs: runc runs
                 the process, Ember no microVM (docs/containers.md, "Pods")

Medians with min-max. On PVM hosts guests run emulated: Ember's figures
are for comparing, not for real hosts. Needs root. Prints a table; writes
JSON (--out).

    bench/containers_bench.py [--runs 3] [--cold-runs 1] [--sandbox-only] [--out FILE]

--sandbox-only measures the sandboxes alone, which needs no KVM.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from test_containers import (IMAGE, Runtime, containerd_unavailable, first_line,  # noqa: E402
                             make_template, process_tree, pss_kib, remove_container,
                             running_containerd)


def running_pss(daemon, runtime, cid):
    """PSS of a detached `sleep` container's process tree, once it runs."""
    daemon.ctr("run", "-d", *runtime.run_args(), IMAGE, cid, "sleep", "1000",
               timeout=runtime.timeout)
    try:
        deadline = time.monotonic() + runtime.timeout
        while True:
            tasks = daemon.ctr("task", "ls").stdout.decode()
            line = [l for l in tasks.splitlines() if l.startswith(cid + " ")]
            if line and "RUNNING" in line[0]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(tasks)
            time.sleep(0.5)
        # The guest's sleep has started once ps in it answers; then measure.
        daemon.ctr("task", "exec", "--exec-id", "probe", cid, "true", timeout=runtime.timeout)
        pid = int(line[0].split()[1])
        return pss_kib(process_tree(pid))
    finally:
        remove_container(daemon, cid)


def sandbox(daemon, runtime, cid):
    """`ctr run -d` of a pod's sandbox until its task runs (s), and the PSS
    of its task's processes (KiB)."""
    start = time.monotonic()
    daemon.ctr("run", "-d", "--annotation", "io.kubernetes.cri.container-type=sandbox",
               "--annotation", f"io.kubernetes.cri.sandbox-id={cid}", *runtime.run_args(),
               IMAGE, cid, "sleep", "100000", timeout=runtime.timeout)
    took = time.monotonic() - start
    try:
        line = [l for l in daemon.ctr("task", "ls").stdout.decode().splitlines()
                if l.startswith(cid + " ")]
        return took, pss_kib(process_tree(int(line[0].split()[1])))
    finally:
        remove_container(daemon, cid)


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1)
    parser.add_argument("--sandbox-only", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "build" / "containers_bench.json"))
    args = parser.parse_args()
    why = containerd_unavailable()
    if why:
        sys.exit(f"containers_bench: {why}")
    times = {"runc": [], "ember-template": [], "ember-cold": []}
    pss = {"runc": [], "ember": [], "runc-sandbox": [], "ember-sandbox": []}
    sandbox_s = {"runc": [], "ember": []}
    template_s = None
    with running_containerd() as daemon:
        runc, ember = Runtime("runc", daemon), Runtime("ember", daemon)
        for run in range(args.runs):
            for name, runtime in (("runc", runc), ("ember", ember)):
                took, kib = sandbox(daemon, runtime, f"{name}-sandbox-{run}")
                sandbox_s[name].append(took)
                pss[f"{name}-sandbox"].append(kib)
        if not args.sandbox_only:
            template_s = make_template(daemon)
        for run in range(0 if args.sandbox_only else args.runs):
            times["runc"].append(first_line(daemon, runc, f"runc-{run}"))
            times["ember-template"].append(first_line(daemon, ember, f"tpl-{run}"))
            pss["runc"].append(running_pss(daemon, runc, f"runc-pss-{run}"))
            pss["ember"].append(running_pss(daemon, ember, f"ember-pss-{run}"))
        for run in range(0 if args.sandbox_only else args.cold_runs):
            times["ember-cold"].append(first_line(
                daemon, ember, f"cold-{run}", ["--annotation", "io.ember.boot=cold"]))
    result = {"first_line_s": {k: summary(v) for k, v in times.items() if v},
              "template_s": template_s,
              "pss_kib": {k: summary(v) for k, v in pss.items() if v},
              "sandbox_start_s": {k: summary(v) for k, v in sandbox_s.items()},
              "pvm_host": Path("/sys/module/kvm_pvm").is_dir(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"{'figure':<40} {'median':>10} {'min':>10} {'max':>10}")
    for group, unit in (("first_line_s", "s"), ("sandbox_start_s", "s"), ("pss_kib", "KiB")):
        for name, s in result[group].items():
            print(f"{group + ' ' + name:<40} {s['median']:>10.2f} {s['min']:>10.2f} "
                  f"{s['max']:>10.2f}  {unit}, n={s['n']}")
    if template_s is not None:
        print(f"{'template_s':<40} {template_s:>10.2f}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
