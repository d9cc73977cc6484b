#!/usr/bin/env bash
# Builds the guest's root file systems: an uncompressed initramfs (cpio) and
# an ext4 image, each holding /init (init.c) and /dev/console. Neither needs
# root privileges or a mount: the cpio comes from the kernel's gen_init_cpio
# and the ext4 image from mke2fs -d, with debugfs adding the device node.
#
#   resources/rootfs/build.sh OUT_DIR     writes OUT_DIR/{initramfs.cpio,rootfs.ext4}
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie -O2 \
  -o "$work/init" "$here/init.c"

# gen_init_cpio is one C file in the kernel tree; build it from Debian's copy.
tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$work" linux-source-6.1/usr/gen_init_cpio.c
gcc -O2 -o "$work/gen_init_cpio" "$work/linux-source-6.1/usr/gen_init_cpio.c"
cat > "$work/cpio.list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/mem 0600 0 0 c 1 1
dir /proc 0755 0 0
dir /sys 0755 0 0
dir /root 0700 0 0
file /init $work/init 0755 0 0
LIST
"$work/gen_init_cpio" "$work/cpio.list" > "$out/initramfs.cpio.tmp"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"

mkdir -p "$work/root"/{dev,proc,sys,root,sbin}
cp "$work/init" "$work/root/init"
cp "$work/init" "$work/root/sbin/init"
rm -f "$out/rootfs.ext4.tmp"
mke2fs -q -t ext4 -L ember-root -d "$work/root" "$out/rootfs.ext4.tmp" 32M >/dev/null
printf "cd /dev\nmknod console c 5 1\n" | debugfs -w -f - "$out/rootfs.ext4.tmp" >/dev/null 2>&1
debugfs -R "stat /dev/console" "$out/rootfs.ext4.tmp" 2>/dev/null | grep -q "Type: character" \
  || { echo "build.sh: /dev/console missing from rootfs.ext4" >&2; exit 1; }
mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"
