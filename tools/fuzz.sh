#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, ASan and UBSan (in build-fuzz/)
# and runs one of them for a bounded time. A crash or a broken invariant
# fails the command and leaves the input in build-fuzz/crashes/; exit 77
# means the target cannot run here (net needs root for its TAP).
#
#   tools/fuzz.sh TARGET SECONDS     run TARGET_fuzzer for SECONDS (default 30)
#
# The targets (tests/fuzz/<target>_fuzzer.cc):
#   virtqueue   a split virtqueue whose rings and descriptors are the input
#   block       virtio-blk requests through the transport, on a memfd disk
#   api         API requests through the router and every body parser
#   snapshot    the snapshot state file, and the configuration it carries
#   mmio        the virtio-mmio transport fed register-access sequences, in
#               front of virtio-blk (Sync and Async), virtio-balloon and
#               virtio-pmem
#   net         virtio-net receive and transmit (a socket pair at the TAP's fd)
#   balloon     virtio-balloon with statistics, reporting and hinting, its target
#               and saved state
#   vsock       virtio-vsock: guest packets and buffers, host programs on its sockets
#   mem         virtio-mem: guest PLUG, UNPLUG, UNPLUG_ALL and STATE requests, the
#               host's requested size, KVM refusing slots, and its saved state
#   rng         virtio-rng, unlimited and rate limited: guest buffers, its timer and
#               its saved state
#   pmem        virtio-pmem on a memfd, unlimited and rate limited: guest flush
#               requests, sound and malformed, its config space, timer and saved state
#   mmds        MMDS's network stack: the guest's frames (ARP, TCP, HTTP), its reads,
#               the clock, and the host's writes to the data store
#   i8042       the i8042's ports and saved state
#   serial      the 8250's registers, host input and saved state
#   jailer      ember-jailer's command line (ParseJailerArgs)
#   cli         ember's command line (ParseCli)
#   agent       the agent protocol's frames and payloads, from either side
#   oci         ember-oci's config.json, process.json and update resources,
#               and the agent request, mounts and cgroup planned from them
#
# A crash input replays with build-fuzz/TARGET_fuzzer build-fuzz/crashes/FILE.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
targets=$(cd "$root/tests/fuzz" && ls *_fuzzer.cc | sed 's/_fuzzer\.cc$//' | tr '\n' ' ')
target=${1:?usage: fuzz.sh TARGET SECONDS; targets: $targets}
if [ ! -f "$root/tests/fuzz/${target}_fuzzer.cc" ]; then
  echo "fuzz.sh: unknown target '$target'; targets: $targets" >&2
  exit 2
fi
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
# A dictionary of the tokens the target's parser looks for, if it has one.
dict=$root/tests/fuzz/$target.dict
[ -f "$dict" ] && dict=-dict=$dict || dict=
# A finding exits 1 (libFuzzer's default, 77, is what ctest reads as skipped).
exec "$build/${target}_fuzzer" -max_total_time="$seconds" -timeout=10 -error_exitcode=1 -print_final_stats=1 \
  -artifact_prefix="$build/crashes/$target-" $dict "$corpus" $seeds
