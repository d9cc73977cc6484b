#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, ASan and UBSan (in build-fuzz/)
# and runs one of them for a bounded time. A crash fails the command and
# leaves the input in build-fuzz/crashes/.
#
#   tools/fuzz.sh virtqueue 60      run virtqueue_fuzzer for 60 seconds
#   tools/fuzz.sh block 60
#   tools/fuzz.sh api 60
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: fuzz.sh virtqueue|block|api SECONDS}
seconds=${2:-30}
build=$root/build-fuzz

# One build at a time, even when ctest runs two fuzzers in parallel.
exec 9>"$root/.build-fuzz.lock"
flock 9
cmake -S "$root" -B "$build" -G Ninja -DEMBER_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
# Quiet unless the build fails; then its output says why.
ninja -C "$build" "${target}_fuzzer" > "$build/ninja-$target.log" 2>&1 \
  || { cat "$build/ninja-$target.log"; exit 1; }
flock -u 9

corpus=$build/corpus/$target
mkdir -p "$corpus" "$build/crashes"
# Checked-in seeds (tests/fuzz/corpus/<target>) are read; new inputs go to $corpus.
seeds=$root/tests/fuzz/corpus/$target
[ -d "$seeds" ] || seeds=
exec "$build/${target}_fuzzer" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$build/crashes/$target-" "$corpus" $seeds
