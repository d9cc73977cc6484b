#!/bin/sh
# Ember's guest command shell: init execs it (/bin/sh /etc/ember/shell.sh) when
# the kernel command line has "ember_shell". It runs as PID 1 and lets a test
# run commands in the guest over the serial console:
#
#   guest: EMBER-SHELL-READY                      (once, when it reads input)
#   host:  <id> <base64 of a shell script>\n      (one line, after READY or
#                                                  after the previous END)
#   guest: EMBER-BEGIN <id>\n
#          <stdout and stderr of the script, byte for byte>
#          \nEMBER-END <id> <exit status>\n
#
# <id> is chosen by the host ([A-Za-z0-9_.-], unique per command) so the
# markers cannot be confused with output. The script runs in a subshell
# (`exit N` ends only it) with stdin from /dev/null and the guest's root
# directory as its working directory. The guest adds the newline before
# EMBER-END: the output is what lies between "EMBER-BEGIN <id>\n" and
# "\nEMBER-END <id> ". The console is raw (no echo, no signals from control
# characters, no \n -> \r\n), so the output arrives unchanged. Kernel
# messages go to the console only at loglevel 1 (emergencies), unless the
# kernel command line has "ember_verbose". A line longer than the VMM's
# serial input buffer (4 KiB) is lost: send larger data in pieces.
# A line that is not valid base64 ends with status 254. On PVM hosts a
# pipeline whose programs run at the same time may fail now and then
# (shared/PLATFORM.md); a sequence of commands is safe.
# To end the microVM: a command "reboot -f" (Ember exits with 0).

export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=dumb
cd /

# /proc first, with an explicit path: busybox runs its applets through
# /proc/self/exe.
/bin/busybox mount -t proc proc /proc
[ -e /sys/kernel ] || mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname ember
ip link set lo up 2>/dev/null

case " $(cat /proc/cmdline) " in
  *" ember_verbose "*) ;;
  *) dmesg -n 1 ;;
esac

stty -echo -icanon -isig -iexten -ixon -icrnl -onlcr min 1 time 0 2>/dev/null

echo "EMBER-SHELL-READY"
while read -r id b64; do
  [ -n "$id" ] || continue
  echo "EMBER-BEGIN $id"
  # A here-document, not a pipe: one process at a time (on PVM hosts two
  # running at once can corrupt a freshly exec'd one, shared/PLATFORM.md).
  if cmd=$(base64 -d 2>/dev/null <<EOF
$b64
EOF
  ); then
    ( eval "$cmd" ) </dev/null 2>&1
    status=$?
  else
    status=254
  fi
  printf '\nEMBER-END %s %d\n' "$id" "$status"
done
echo "ember-shell: console closed"
sync
reboot -f
