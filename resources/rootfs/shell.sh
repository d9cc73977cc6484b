#!/bin/sh
# The console program of Ember's guests, started by busybox init
# (resources/rootfs/inittab) after rcS. With "ember_demo" on the kernel
# command line it shows what the guest runs and shuts down cleanly;
# otherwise ("ember_shell") it lets a test run commands over the serial
# console:
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
# characters, no \n -> \r\n), so the output arrives unchanged. A line
# longer than the VMM's serial input buffer (4 KiB) is lost: send larger
# data in pieces. A line that is not valid base64 ends with status 254.
# To end the microVM: "reboot" (a clean shutdown through init) or
# "reboot -f" (at once); either way Ember exits with 0.

export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=dumb
cd /

case " $(cat /proc/cmdline) " in
  *" ember_demo "*)
    # No pipelines: one process at a time (see above).
    set -- /proc/[0-9]*
    mounts=
    while read -r _ dir _; do mounts="$mounts $dir"; done < /proc/mounts
    echo "ember-demo: $(uname -sr) $(uname -m), $(grep -c ^processor /proc/cpuinfo) vCPU," \
      "$(grep MemTotal /proc/meminfo)"
    echo "ember-demo: $# processes; mounted:$mounts"
    /usr/bin/ember-usercheck
    read -r up _ < /proc/uptime
    echo "ember-demo: up $up s; shutting down"
    reboot
    exit 0
    ;;
esac

stty -echo -icanon -isig -iexten -ixon -icrnl -onlcr min 1 time 0 2>/dev/null

echo "EMBER-SHELL-READY"
while read -r id b64; do
  [ -n "$id" ] || continue
  echo "EMBER-BEGIN $id"
  # A here-document, not a pipe: one exec fewer per command.
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
