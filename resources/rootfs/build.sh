#!/usr/bin/env bash
# Builds the guest's root file systems, without root privileges or a mount
# (gen_init_cpio from the kernel tree, mke2fs -d, debugfs for the device node):
#
#   initramfs.cpio          uncompressed: the project's init (init.c) as /init,
#                           /dev/console and /dev/mem. Small on purpose: on PVM
#                           hosts the kernel unpacks an initramfs at emulated
#                           speed (Debian's 2 MB busybox adds about 30 s of
#                           guest time to every boot that uses it).
#   initramfs-busybox.cpio  the same plus Debian's static busybox as
#                           /bin/busybox with a link for each applet, busybox
#                           init's /etc/inittab with /etc/ember/{rcS,shell.sh}
#                           (init's "ember_shell" and "ember_demo" modes),
#                           /usr/bin/ember-usercheck (usercheck.c, static), and
#                           /usr/bin/ember-agent (src/agent, static: runs
#                           commands for ember-exec over vsock).
#   rootfs.ext4             the init as /init and /sbin/init, and the rest as
#                           above: the fast way to user space (pages come over
#                           virtio-blk as they are needed).
#
#   resources/rootfs/build.sh OUT_DIR     writes the three into OUT_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

busybox=/bin/busybox
# Debian's busybox-static; the dynamic busybox package installs the same path.
if ! "$busybox" --list-full >/dev/null 2>&1 || readelf -l "$busybox" | grep -q INTERP; then
  echo "build.sh: $busybox missing or not static; install busybox-static (tools/install-deps.sh)" >&2
  exit 1
fi
# Applet links, relative to /, except the two places the project's init holds
# (/sbin/init, and /linuxrc, which nothing needs).
applets=$("$busybox" --list-full | grep -vxE 'sbin/init|linuxrc' | sort)

gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie -O2 \
  -o "$work/init" "$here/init.c"
gcc -static -O2 -Wall -pthread -o "$work/ember-usercheck" "$here/usercheck.c"
# The guest agent: its folder depends on nothing else in the tree (the
# build checks that), so plain g++ builds it; stripped, it adds ~0.8 MB.
agent_sources=()
for f in "$here"/../../src/agent/*.cc; do
  case $f in *_test.cc) ;; *) agent_sources+=("$f") ;; esac
done
g++ -std=c++20 -static -O2 -s -Wall -ffunction-sections -fdata-sections -Wl,--gc-sections \
  -I "$here/../.." -o "$work/ember-agent" "${agent_sources[@]}"

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

cat >> "$work/cpio.list" <<LIST
dir /tmp 1777 0 0
dir /run 0755 0 0
dir /mnt 0755 0 0
dir /bin 0755 0 0
dir /sbin 0755 0 0
dir /usr 0755 0 0
dir /usr/bin 0755 0 0
dir /usr/sbin 0755 0 0
dir /etc 0755 0 0
dir /etc/ember 0755 0 0
file /sbin/init $work/init 0755 0 0
file /bin/busybox $busybox 0755 0 0
file /etc/inittab $here/inittab 0644 0 0
file /etc/ember/rcS $here/rcS 0755 0 0
file /etc/ember/shell.sh $here/shell.sh 0755 0 0
file /usr/bin/ember-usercheck $work/ember-usercheck 0755 0 0
file /usr/bin/ember-agent $work/ember-agent 0755 0 0
LIST
for a in $applets; do
  [ "$a" = bin/busybox ] || echo "slink /$a /bin/busybox 0777 0 0" >> "$work/cpio.list"
done
"$work/gen_init_cpio" "$work/cpio.list" > "$out/initramfs-busybox.cpio.tmp"
mv "$out/initramfs-busybox.cpio.tmp" "$out/initramfs-busybox.cpio"

mkdir -p "$work/root"/{dev,proc,sys,root,tmp,run,mnt,bin,sbin,usr/bin,usr/sbin,etc/ember}
chmod 1777 "$work/root/tmp"
cp "$work/init" "$work/root/init"
cp "$work/init" "$work/root/sbin/init"
cp "$busybox" "$work/root/bin/busybox"
install -m 0644 "$here/inittab" "$work/root/etc/inittab"
install -m 0755 "$here/rcS" "$here/shell.sh" "$work/root/etc/ember/"
install -m 0755 "$work/ember-usercheck" "$work/ember-agent" "$work/root/usr/bin/"
for a in $applets; do
  [ "$a" = bin/busybox ] || ln -s /bin/busybox "$work/root/$a"
done
rm -f "$out/rootfs.ext4.tmp"
mke2fs -q -t ext4 -L ember-root -d "$work/root" "$out/rootfs.ext4.tmp" 32M >/dev/null
printf "cd /dev\nmknod console c 5 1\n" | debugfs -w -f - "$out/rootfs.ext4.tmp" >/dev/null 2>&1
debugfs -R "stat /dev/console" "$out/rootfs.ext4.tmp" 2>/dev/null | grep -q "Type: character" \
  || { echo "build.sh: /dev/console missing from rootfs.ext4" >&2; exit 1; }
mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"
