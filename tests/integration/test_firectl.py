"""Firecracker's own command-line client, firectl (df2fb87, 26 commits
after 0.2.0), with the Firecracker Go SDK v1.0.0 under it, both unchanged
(tools/build-go-clients.sh builds them with Debian's Go), drives Ember
installed as its firecracker binary: a real guest boots to user space,
answers on its console and through its agent on the vsock device firectl
added, sees the drives as firectl attached them, and shuts down when
firectl is sent SIGTERM (the SDK's Shutdown: SendCtrlAltDel).
test_clients.py replays what the SDK sends for more of its options; this
runs its real code: its HTTP client and models, its process handling and
its FIFO log reader (its timeouts widened only on an emulated CPU, SDK_ENV)."""

import shutil
import signal

import pytest

from conftest import EXIT_OK, ROOT
from guest_shell import SerialShell, shell_boot_args
from test_clients import (GUEST_CID, SDK_ENV, guest_exec, image_with_marker,
                          kill_running, wait_for_agent)

FIRECTL = ROOT / "build" / "clients" / "firectl"

@pytest.fixture
def firectl():
    if not FIRECTL.exists():
        pytest.skip(f"{FIRECTL} was not built: tools/build-go-clients.sh needs the git "
                    "repositories of firectl and firecracker-go-sdk (FIRECTL_GIT, GO_SDK_GIT)")
    return FIRECTL


@pytest.mark.usefixtures("kvm")
def test_firectl_boots_a_guest_and_shuts_it_down(firectl, ember, guest, tmp_path):
    fc = tmp_path / "firecracker"
    shutil.copy(ember, fc)
    root_img = tmp_path / "rootfs.ext4"
    shutil.copy(guest["rootfs.ext4"], root_img)
    ro_img = image_with_marker(tmp_path / "ro.img", 1 << 20, b"firectl-read-only\n")
    rw_img = image_with_marker(tmp_path / "rw.img", 2 << 20, b"firectl-writable\n")
    uds, sock, log = tmp_path / "v.sock", tmp_path / "fc.sock", tmp_path / "fc.log"
    shell = SerialShell([
        str(firectl), "--firecracker-binary", str(fc), "--kernel", str(guest["vmlinux"]),
        "--kernel-opts", shell_boot_args(), "--root-drive", str(root_img),
        "--add-drive", f"{ro_img}:ro", "--add-drive", f"{rw_img}:rw",
        "--vsock-device", f"{uds}:{GUEST_CID}", "-m", "256", "-c", "1",
        "--socket-path", str(sock), "--firecracker-log", str(log)], tmp_path, "firectl.log",
        env={**SDK_ENV, "TMPDIR": str(tmp_path)})  # its FIFOs' directory
    try:
        shell.wait_ready()
        # The root drive first (vda, read-write), then the added ones in
        # their order; the SDK's kernel arguments in any order.
        lines = shell.check("cat /sys/block/vda/ro /sys/block/vdb/size /sys/block/vdb/ro "
                            "/sys/block/vdc/size /sys/block/vdc/ro; head -c 18 /dev/vdb; "
                            "head -c 17 /dev/vdc; cat /proc/cmdline").splitlines()
        assert lines[:7] == ["0", "2048", "1", "4096", "0", "firectl-read-only",
                             "firectl-writable"], lines
        assert set(shell_boot_args().split()) <= set(lines[7].split()), lines[7]
        mem_kib = int(shell.check("sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo"))
        assert 200 * 1024 < mem_kib <= 256 * 1024, mem_kib
        # The vsock device firectl asked for reaches the guest's agent.
        wait_for_agent(ember, uds, lambda: shell.proc.poll() is None)
        status, out, err = guest_exec(ember, uds, "cat /proc/sys/kernel/hostname")
        assert (status, out) == (0, "ember\n"), err

        # firectl's SIGTERM handler: Machine.Shutdown sends SendCtrlAltDel,
        # the guest reboots, the VMM exits 0, and so does firectl.
        shell.proc.send_signal(signal.SIGTERM)
        assert shell.proc.wait(timeout=180) == EXIT_OK, shell.log()
        assert "Start machine was happy" in shell.log(), shell.log()
        # The SDK's FIFO reader copied Ember's log, from PUT /logger on,
        # into the file firectl named.
        text = log.read_text(errors="replace")
        for line in ('Put request on "/drives/1"', "exit code 0"):
            assert line in text, text
        assert not sock.exists(), "the SDK removes its socket"
    finally:
        shell.close()
        kill_running(fc)
