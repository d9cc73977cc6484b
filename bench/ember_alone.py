#!/usr/bin/python3
"""Ember's own rows of bench/compare.py on a host without QEMU (a lent
machine, say): start-up (--runs each), boot to init and memory (--lives),
and restore of 128 MiB and 1 GiB (--runs // 2 each), with compare.py's own
functions. Prints the rows and writes JSON (--json FILE); asserts nothing.
Ratios to QEMU need compare.py on a host that has both.

    bench/ember_alone.py --runs 20 --json ember-alone.json
"""

import argparse
import json
import sys
from pathlib import Path

import compare


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ember", default=str(compare.ROOT / "build" / "ember"))
    p.add_argument("--kernel", default=str(compare.ROOT / "build" / "guest" / "vmlinux"))
    p.add_argument("--initrd", default=str(compare.ROOT / "build" / "guest" / "initramfs.cpio"))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--lives", type=int, default=5)
    p.add_argument("--boot-timeout", type=float, default=120)
    p.add_argument("--json")
    args = p.parse_args()
    if args.runs < 2 or args.lives < 1:
        sys.exit("--runs must be at least 2 and --lives at least 1")
    kernel, initrd = Path(args.kernel).resolve(), Path(args.initrd).resolve()
    boot_args = compare.guest_boot_args()
    vmms = {"ember": (compare.Ember, args.ember)}
    quick = compare.measure_startup(vmms, kernel, initrd, boot_args, args.runs)["ember"]
    lives = [compare.one_life(compare.Ember, args.ember, kernel, initrd, boot_args,
                              args.boot_timeout) for _ in range(args.lives)]
    rows = {key: compare.summarize([r[key] for r in quick])
            for key in compare.QUICK_KEYS if key in quick[0]}
    rows.update({key: compare.summarize([r[key] for r in lives])
                 for key in ("start_to_init_ms", "rss_overhead_mib", "pss_overhead_mib")})
    restore = compare.measure_restores(vmms, kernel, initrd, boot_args, args.runs // 2)["ember"]
    info = compare.machine_info(kernel, qemu=False)
    results = {"machine": info, "runs": args.runs, "lives": args.lives, "boot_args": boot_args,
               "ember": rows, "clean_stops": sum(r["clean_stop"] for r in lives),
               "restore": restore}
    names = {key: text for key, text, _ in compare.LIFE_ROWS}
    print(f"{info['cpu']}, {info['cores']} cores, KVM {info['kvm']}")
    for key, s in rows.items():
        print(f"{names[key]}: {compare.fmt(s, 3)}")
    for mib, s in restore.items():
        print(f"restore {mib} MiB, load request to first KVM_RUN: {compare.fmt(s, 3)}")
    print(f"clean stops: {results['clean_stops']}/{args.lives}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
