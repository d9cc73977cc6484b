#!/usr/bin/env bash
# Builds every unit test with ASan and UBSan (gcc, in build-asan/) and runs
# them: what the fuzzers do for their targets, for all the unit tests. Any
# report fails the command. Left out: the tests that put Ember's seccomp
# filters on a thread, which rightly deny the sanitizers' own calls
# (sigaltstack as a thread ends); the fuzzers run the device paths under
# the filters with those calls allowed (tests/fuzz/device_filter.h).
#
#   tools/sanitize.sh [GTEST_FILTER]     e.g. 'GuestMemory*'
#
# ASan cannot be static: every binary here is linked dynamically
# (-DEMBER_SANITIZE=ON), unlike Ember's own build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-asan
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBER_SANITIZE=ON \
  >/dev/null
ninja -C "$build"
tests=$(cd "$build" && ls ember_*_tests)

filtered="SeccompFiltersDeathTest.*:HttpServerTest.*"
rc=0
for t in $tests; do
  echo "== $t"
  "$build/$t" --gtest_brief=1 --gtest_filter="${1:-*}-$filtered" || {
    echo "sanitize.sh: $t failed" >&2
    rc=1
  }
done
exit $rc
