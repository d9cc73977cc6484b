#!/usr/bin/env bash
# Installs every package Ember needs to build, test and boot a guest, from
# Debian's archive. Does nothing when all of them are already installed.
set -euo pipefail

packages=(
  # toolchain and the design card's libraries
  build-essential cmake ninja-build pkg-config
  libseccomp-dev libabsl-dev rapidjson-dev libbenchmark-dev
  libgtest-dev libgmock-dev libboost-dev curl
  # io_uring engine; fuzzing (tools/fuzz.sh: clang with libFuzzer, ASan, UBSan)
  liburing-dev clang-14 libclang-rt-14-dev
  # guest kernel (resources/kernels/build.sh)
  linux-source-6.1 flex bison bc libelf-dev libssl-dev xz-utils lz4
  # guest root file system (resources/rootfs/build.sh)
  e2fsprogs busybox-static
  # integration tests
  python3 python3-pytest python3-pytest-xdist python3-pytest-timeout iputils-ping
  iproute2
  # containers in microVMs (test_containers.py): Debian's containerd, its runc
  # shim, runc as the baseline, and the CNI plugins `ctr run --cni` runs
  containerd runc containernetworking-plugins
  # side-by-side benchmarks (tools/devtool bench): the peer and the charts
  qemu-system-x86 python3-matplotlib binutils
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
