#!/usr/bin/env python3
"""Fails when a file of one layer includes a project header of a layer it
may not use. Run by the build (cmake/ember_layers.cmake) for every layer
library, so an include that climbs a layer stops the build.

    check_layers.py --stamp FILE --layer DIR --may-use DIR... -- FILE...
"""

import argparse
import re
import sys
from pathlib import Path

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
# Project headers start with one of these; anything else (absl, gtest,
# rapidjson, the build's generated files) is not a layer.
PROJECT_ROOTS = ("src/", "api/", "tests/", "bench/")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stamp", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--layer", required=True)
    p.add_argument("--may-use", nargs="*", default=[])
    p.add_argument("files", nargs="*")
    args = p.parse_args()

    allowed = [d.rstrip("/") + "/" for d in [args.layer, *args.may_use]]
    errors = []
    for name in args.files:
        path = Path(name)
        rel = path.relative_to(args.root).as_posix()
        for header in INCLUDE.findall(path.read_text(errors="replace")):
            if not header.startswith(PROJECT_ROOTS):
                continue
            if not any(header.startswith(a) for a in allowed):
                errors.append(f"{rel} includes {header}: {args.layer} may use only "
                              f"{', '.join(a.rstrip('/') for a in allowed)}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    Path(args.stamp).write_text("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
