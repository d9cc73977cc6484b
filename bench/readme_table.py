"""The README's benchmark summary, regenerated from the benchmarks' JSON:
bench/compare.py's results.json (this run) and, where present, the Ember run
in density.json that held the most VMs (bench/density_bench.py). Replaces what lies
between the two markers in README.md; the rest of the file is left as is.
"""

import json
from pathlib import Path

BEGIN = "<!-- bench/readme_table.py writes from here: do not edit by hand -->"
END = "<!-- bench/readme_table.py: end -->"


def _ms(s, digits=2):
    return f"{s['median']:.{digits}f}"


def _idle_density(path):
    """Of density.json's Ember runs, the one that held the most VMs:
    (N held, CPU %/VM, PSS MiB/VM, its label)."""
    if not path.exists():
        return None
    best = None
    for run in json.loads(path.read_text()).get("runs", []):
        held = [step for step in run.get("ember", []) if step.get("held")]
        if held and (best is None or held[-1]["n"] > best[0]):
            top = held[-1]
            best = (top["n"], top["cpu_pct_per_vm"]["median"], top["pss_mib_per_vm"]["median"],
                    run.get("label", ""))
    return best


def table(results, density_json):
    info, e, q = results["machine"], results["ember"], results["qemu"]
    rows = [
        ("process start to API (QMP) socket ready, wall / CPU",
         f"{_ms(e['ready_wall_ms'], 1)} / {_ms(e['ready_cpu_ms'], 1)} ms",
         f"{_ms(q['ready_wall_ms'], 0)} / {_ms(q['ready_cpu_ms'], 0)} ms", "2 CPU ms"),
        ("VMM RSS / PSS minus guest memory, 1 vCPU, 128 MiB, guest running",
         f"{_ms(e['rss_overhead_mib'])} / {_ms(e['pss_overhead_mib'])} MiB",
         f"{_ms(q['rss_overhead_mib'], 1)} / {_ms(q['pss_overhead_mib'], 1)} MiB", "2 MiB"),
        ("start request to first KVM_RUN", f"{_ms(e['start_to_first_kvm_run_ms'])} ms",
         f"{_ms(q['start_to_first_kvm_run_ms'])} ms (machine built before `cont`)", "0.3 ms"),
    ]
    if "start_answered_ms" in e:
        rows.append(("start request to its answer (204 / `cont` return), as the client sees it",
                     f"{_ms(e['start_answered_ms'])} ms", f"{_ms(q['start_answered_ms'])} ms", ""))
    rows += [
        ("process start to first KVM_RUN, configured through the API",
         f"{_ms(e['spawn_to_first_kvm_run_ms'], 1)} ms",
         f"{_ms(q['spawn_to_first_kvm_run_ms'], 0)} ms", "3 ms"),
        ("process start to first KVM_RUN, Ember `--config-file` / QEMU without -S",
         f"{_ms(e['direct_to_first_kvm_run_ms'], 1)} ms",
         f"{_ms(q['direct_to_first_kvm_run_ms'], 0)} ms", "3 ms"),
    ]
    if "direct_copied_to_first_kvm_run_ms" in e:
        rows.append(("the same two, API / config file, kernel and initrd held open for writing "
                     "elsewhere (Ember cannot lease them and copies them)",
                     f"{_ms(e['spawn_copied_to_first_kvm_run_ms'], 1)} / "
                     f"{_ms(e['direct_copied_to_first_kvm_run_ms'], 1)} ms",
                     f"{_ms(q['spawn_copied_to_first_kvm_run_ms'], 0)} / "
                     f"{_ms(q['direct_copied_to_first_kvm_run_ms'], 0)} ms", "3 ms"))
    restore = results.get("restore")
    if restore and {"128", "1024"} <= set(restore["ember"]):
        er, qr = restore["ember"], restore["qemu"]
        rows.append(("snapshot load request to first KVM_RUN, 128 MiB / 1 GiB",
                     f"{_ms(er['128'])} / {_ms(er['1024'])} ms",
                     f"{_ms(qr['128'], 1)} / {_ms(qr['1024'], 0)} ms (`-incoming`)",
                     "1 / 1.5 ms"))
    if results.get("density_n"):
        n = str(max(results["density_n"]))
        ed, qd = results["density"]["ember"][n], results["density"]["qemu"][n]
        rows.append((f"{n} VMs at once, spawn to last first KVM_RUN",
                     f"{_ms(ed['vms_per_s_from_spawn'], 0)} VMs/s "
                     f"({_ms(ed['vms_per_s_per_core'], 0)} per core)",
                     f"{_ms(qd['vms_per_s_from_spawn'], 0)} VMs/s "
                     f"({_ms(qd['vms_per_s_per_core'], 0)} per core)", "25 per core"))
        rows.append((f"VMM PSS per VM with {n} running", f"{_ms(ed['vmm_pss_per_vm_mib'])} MiB",
                     f"{_ms(qd['vmm_pss_per_vm_mib'], 1)} MiB", ""))
    idle = _idle_density(density_json)
    if idle:
        held, cpu, pss, label = idle
        rows.append((f"idle microVMs held, each answering within 1 s "
                     f"(`bench/density_bench.py`, {label})",
                     f"{held} ({cpu:.1f} % of a core, {pss:.2f} MiB PSS each)", "", "1,000"))
    pvm = info["kvm"] != "hardware"
    rows.append(("start request to `Run /init`" + (" (PVM: emulated guest, not meaningful)"
                                                   if pvm else ""),
                 f"{e['start_to_init_ms']['median'] / 1000:.1f} s",
                 f"{q['start_to_init_ms']['median'] / 1000:.1f} s", ""))
    qemu_version = info["qemu"].split("version", 1)[-1].split("(")[0].strip()
    lines = [f"From `docs/benchmarks/results.md` ({info['date'][:10]}, {info['cores']} cores, "
             f"KVM: {info['kvm']}; medians of {results['runs']} runs for boot and memory, "
             f"of {results.get('quick_runs', results['runs'])} for the start-up figures and "
             f"snapshot loads; QEMU {qemu_version} microvm):", "",
             "| figure | Ember | QEMU microvm | target |", "|---|---|---|---|"]
    again = results.get("measured_again", {})
    if again:
        names = {"startup": "the start-up rows (process start, start request)",
                 "restore": "the snapshot load rows"}
        lines[0:1] = [lines[0][:-2] + "; measured again by `tools/devtool bench --only`: " +
                      ", ".join(f"{names[k]} at {v[:10]} {v[11:16]} UTC"
                                for k, v in sorted(again.items())) + "):"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def rewrite(readme, results, density_json):
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: the markers for the benchmark table are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table(results, density_json)}\n{END}{tail}")


def main():
    """--check: fails if README.md's table is not what the committed JSON gives
    (a hand edit, or results.json changed without --report-only)."""
    import argparse
    import sys
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--check", action="store_true")
    p.parse_args()
    root = Path(__file__).resolve().parents[1]
    out = root / "docs" / "benchmarks"
    results = json.loads((out / "results.json").read_text())
    want = f"{BEGIN}\n{table(results, out / 'density.json')}\n{END}"
    if want not in (root / "README.md").read_text():
        sys.exit("README.md's benchmark table differs from what bench/readme_table.py makes of "
                 "docs/benchmarks/*.json: run bench/compare.py --report-only")


if __name__ == "__main__":
    main()
