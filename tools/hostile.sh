#!/usr/bin/env bash
# Runs the hostile-guest test (tests/integration/test_hostile_guest.py) for
# longer than CI does, with a chosen seed: Ember with seccomp on, a virtio-blk
# drive, a virtio-net on a TAP in a network namespace of its own and a
# balloon, attacked by build/ember_hostile_guest.elf for SECONDS, then idle,
# then one valid read and one valid frame. Needs root (the namespace) and
# /dev/kvm. The test prints what it measured; a bound broken fails it.
#
#   tools/hostile.sh                 30 s, seed 1 (what CI runs)
#   tools/hostile.sh 600             ten minutes, seed 1
#   tools/hostile.sh 600 12345       ten minutes, seed 12345
#   tools/hostile.sh 600 random      ten minutes, a new seed (printed)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
seed=${2:-1}
[ "$seed" = random ] && seed=$(( (RANDOM << 15) | RANDOM ))
case "$seconds$seed" in
  *[!0-9]*) echo "usage: hostile.sh [SECONDS] [SEED|random]" >&2; exit 2 ;;
esac
ninja -C "$root/build" ember ember_hostile_guest >/dev/null
echo "hostile guest: ${seconds} s, seed ${seed}"
EMBER_HOSTILE_SECS=$seconds EMBER_HOSTILE_SEED=$seed exec /usr/bin/python3 -m pytest -q -s \
  -p no:cacheprovider "$root/tests/integration/test_hostile_guest.py" --ember "$root/build/ember"
