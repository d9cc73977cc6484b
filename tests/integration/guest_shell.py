"""Runs commands inside a guest over its serial console.

The guest's init, booted with "ember_shell" on the kernel command line, execs
/etc/ember/shell.sh (resources/rootfs/shell.sh), which speaks this protocol:

    guest: EMBER-SHELL-READY
    host:  <id> <base64 of a shell script>\\n
    guest: EMBER-BEGIN <id>\\n<output>\\nEMBER-END <id> <status>\\n

GuestShell starts ember with its stdin on a pipe (the serial input) and its
stdout (the console) in a file, and turns each exchange into (status,
output). Boot one guest and share it between checks: a boot costs tens of
seconds on PVM hosts. With api=True Ember also serves its API (request());
without a config it waits there to be configured or to load a snapshot,
whose guest shell then takes commands at once (no READY line).
"""

import base64
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

from conftest import BOOT_TIMEOUT_S, http_request, wait_for_api

READY = "EMBER-SHELL-READY"
# The VMM keeps at most 4 KiB of unread serial input; stay well below.
MAX_LINE = 3000


def shell_boot_args(base="console=ttyS0 reboot=k panic=1 pci=off"):
    """The kernel command line for init's shell mode (Ember adds what a PVM
    host needs, "pvmuser" among it)."""
    return f"{base} ember_shell"


class CommandFailed(AssertionError):
    pass


class SerialShell:
    """The protocol with a guest whose VMM process, started from `cmd`, takes
    the serial input on its stdin (a pipe) and writes the console to its
    stdout (workdir/console.out); its stderr goes to workdir/`log_name`."""

    def __init__(self, cmd, workdir, log_name, env=None):
        self.workdir = Path(workdir)
        self.console_path = self.workdir / "console.out"
        self.log_path = self.workdir / log_name
        self._out = open(self.console_path, "wb")
        self._err = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.PIPE,
                                     stdout=self._out, stderr=self._err, env=env)
        self._pos = 0  # console offset up to which exchanges have been parsed

    def console(self):
        return self.console_path.read_bytes().decode(errors="replace")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def _wait_for(self, pattern, timeout):
        """Waits until `pattern` (a compiled bytes regex) matches the console
        after the current position; returns the match and the console."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.console_path.read_bytes()
            m = pattern.search(data, self._pos)
            if m:
                return m, data
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = "ember exited" if self.proc.poll() is not None else "timeout"
                raise CommandFailed(f"{why} waiting for {pattern.pattern!r}\n--- log ---\n"
                                    f"{self.log()}\n--- console tail ---\n"
                                    f"{data[-3000:].decode(errors='replace')}")
            time.sleep(0.1)

    def wait_ready(self, timeout=BOOT_TIMEOUT_S):
        m, _ = self._wait_for(re.compile(re.escape(READY.encode()) + b"\n"), timeout)
        self._pos = m.end()

    def run(self, script, timeout=120):
        """Runs `script` (sh syntax, several lines allowed) in the guest;
        returns (exit status, output as bytes, stdout and stderr together)."""
        cid = uuid.uuid4().hex[:12]
        line = f"{cid} {base64.b64encode(script.encode()).decode()}\n".encode()
        if len(line) > MAX_LINE:
            raise ValueError(f"command of {len(line)} bytes: send large data in pieces")
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        begin = f"EMBER-BEGIN {cid}\n".encode()
        end = re.compile(b"\nEMBER-END " + cid.encode() + b" (\\d+)\n")
        m, data = self._wait_for(end, timeout)
        start = data.find(begin, self._pos)
        assert 0 <= start < m.start() + 1, "EMBER-BEGIN missing"
        output = data[start + len(begin):m.start()]
        self._pos = m.end()
        return int(m.group(1)), output

    def check(self, script, timeout=120):
        """Runs `script`; returns its output as text, fails unless it exits 0."""
        status, output = self.run(script, timeout)
        if status != 0:
            raise CommandFailed(f"{script!r} exited {status}:\n{output.decode(errors='replace')}")
        return output.decode(errors="replace")

    def write_file(self, path, data, chunk=1500):
        """Writes bytes to `path` in the guest, in pieces that fit a line."""
        self.check(f": > {path}")
        for i in range(0, len(data), chunk):
            b64 = base64.b64encode(data[i:i + chunk]).decode()
            # A here-document: one program, one exec per piece.
            self.check(f"base64 -d >> {path} <<EOF\n{b64}\nEOF")

    def shutdown(self, timeout=120):
        """Reboots the guest (Ember exits 0) and returns Ember's exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(f"{uuid.uuid4().hex[:12]} "
                                      f"{base64.b64encode(b'sync; reboot -f').decode()}\n".encode())
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self._out, self._err):
            try:
                f.close()
            except (BrokenPipeError, OSError):
                pass


class GuestShell(SerialShell):
    """An ember process (its API too with api=True) running a guest in shell
    mode."""

    def __init__(self, ember, workdir, config=None, args=(), api=False, prefix=()):
        cmd = [*prefix, str(ember)]
        self.sock = Path(workdir) / "api.sock"
        cmd += ["--api-sock", str(self.sock)] if api else ["--no-api"]
        if config is not None:
            path = Path(workdir) / "vm.json"
            path.write_text(json.dumps(config))
            cmd += ["--config-file", str(path)]
        super().__init__(cmd + list(args), workdir, "ember.log")
        if api:
            try:
                wait_for_api(self.sock, self.proc)
            except AssertionError as e:
                self.close()
                raise AssertionError(f"{e}: {self.log()}") from None

    def request(self, method, path, body=None):
        """An API request (api=True): (status, parsed JSON or None)."""
        return http_request(self.sock, method, path, body)

    def ctrl_alt_del(self, timeout=180):
        """Sends Ctrl-Alt-Del through the API; busybox init's ctrlaltdel
        action shuts the guest down cleanly and the kernel restarts through
        the keyboard controller. Returns Ember's exit code."""
        # Pressed a second time if the first did not end the guest, as a
        # user would: the emulated guest of a PVM host can be slow to react.
        for attempt in (1, 2):
            status, reply = self.request("PUT", "/actions", {"action_type": "SendCtrlAltDel"})
            assert status == 204, reply
            try:
                code = self.proc.wait(timeout=timeout / 2)
                break
            except subprocess.TimeoutExpired:
                if attempt == 2:
                    raise CommandFailed(
                        f"no shutdown after Ctrl-Alt-Del twice\n{self.console()[-4000:]}")
        console = self.console()[self._pos:]
        for line in ("ember-init: ctrl-alt-del", "The system is going down NOW!",
                     "Requesting system reboot"):
            assert line in console, f"{line!r} missing:\n{console[-3000:]}"
        return code
