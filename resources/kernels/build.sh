#!/usr/bin/env bash
# Builds Ember's guest kernel (vmlinux and bzImage) from Debian's
# linux-source-6.1, cached by the hash of the config fragment, the patches and
# this script, outside the work tree. Prints the cache directory.
#
#   resources/kernels/build.sh            build (or reuse) and print the dir
#   EMBER_CACHE_DIR=/x resources/kernels/build.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tarball=/usr/src/linux-source-6.1.tar.xz
cache_root=${EMBER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ember}

hash=$( (cat "$here/ember-x86_64.fragment" "$here/build.sh"; \
         cat "$here"/patches/*.patch 2>/dev/null || true; \
         stat -c %s "$tarball") | sha256sum | cut -c1-16)
out=$cache_root/kernels/$hash
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  echo "$out"; exit 0
fi

[ -f "$tarball" ] || { echo "build.sh: $tarball missing; run tools/install-deps.sh" >&2; exit 1; }
work=$(mktemp -d "$cache_root/kbuild.XXXXXX" 2>/dev/null || { mkdir -p "$cache_root"; mktemp -d "$cache_root/kbuild.XXXXXX"; })
trap 'rm -rf "$work"' EXIT

echo "build.sh: building guest kernel $hash (a few minutes, once)" >&2
tar -C "$work" -xf "$tarball"
src=$work/linux-source-6.1
for p in "$here"/patches/*.patch; do
  [ -e "$p" ] || continue
  patch -d "$src" -p1 --quiet < "$p"
done

make -C "$src" -s ARCH=x86_64 tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" \
  "$here/ember-x86_64.fragment" >/dev/null
make -C "$src" -s ARCH=x86_64 olddefconfig >/dev/null

# Fail on any fragment line Kconfig did not keep.
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$src/.config" || { echo "build.sh: config lost: $line" >&2; bad=1; } ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }; opt=${opt%% *}
      grep -q "^$opt=" "$src/.config" && { echo "build.sh: config set: $opt" >&2; bad=1; } ;;
  esac
done < "$here/ember-x86_64.fragment"
[ $bad -eq 0 ] || exit 1

make -C "$src" -s ARCH=x86_64 -j"$(nproc)" vmlinux bzImage >&2

mkdir -p "$out.tmp"
cp "$src/vmlinux" "$src/arch/x86/boot/bzImage" "$src/.config" "$out.tmp/"
mv "$out.tmp" "$out"
echo "$out"
