"""Per-thread seccomp filters: a call a thread kind does not need ends Ember
with 148 and a log line naming the thread and the call. Every other
integration test runs a whole guest life (boot, devices, API, shutdown)
under the built-in filters, so any call missing from them fails there."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (EXIT_BAD_CONFIGURATION, EXIT_BAD_SYSCALL, EXIT_SIGTERM, ROOT,
                      boot_config, run_ember)

POLICY = ROOT / "resources" / "seccomp" / "x86_64.json"


def seccompiler(ember):
    return Path(ember).parent / "ember-seccompiler"


def run_with_api(ember, tmp_path, config, args, timeout=60):
    """Runs ember serving its API too (the api thread exists then)."""
    path = tmp_path / "vm.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([str(ember), "--api-sock", str(tmp_path / "api.sock"),
                           "--config-file", str(path), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return proc.returncode, proc.stderr.decode(errors="replace")


# The call each thread kind makes first once its filter is on: the VMM and
# API threads wait in their event loops, a vCPU enters KVM_RUN.
FIRST_CALLS = {"vmm": ("epoll_wait", "epoll_pwait"), "api": ("epoll_wait",), "vcpu": ("ioctl",)}


def filters_without(ember, tmp_path, kind):
    """Filters compiled from the built-in policy, less `kind`'s first call."""
    policy = json.loads(POLICY.read_text())
    policy[kind]["filter"] = [r for r in policy[kind]["filter"]
                              if r["syscall"] not in FIRST_CALLS[kind]]
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    subprocess.run([str(seccompiler(ember)), "--input", str(tmp_path / "policy.json"),
                    "--output", str(tmp_path / "filters.bin")], check=True)
    return tmp_path / "filters.bin"


@pytest.mark.parametrize("kind", ["vmm", "api", "vcpu"])
def test_a_call_the_thread_does_not_need_ends_ember_with_148(ember, guest, tmp_path, kind):
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    filters = filters_without(ember, tmp_path, kind)
    code, log = run_with_api(ember, tmp_path, config, ["--seccomp-filter", str(filters)])
    assert code == EXIT_BAD_SYSCALL, log
    assert f"the {kind} thread's filter denied system call" in log, log
    assert any(f"({call})" in log for call in FIRST_CALLS[kind]), log


def test_no_seccomp_leaves_every_thread_unfiltered(ember, guest, tmp_path):
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    path = tmp_path / "vm.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([str(ember), "--no-api", "--config-file", str(path), "--no-seccomp"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if seccomp_modes(proc.pid).get("vcpu0") is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert set(seccomp_modes(proc.pid).values()) == {0}, "no thread is filtered"
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == EXIT_SIGTERM
    assert b"--no-seccomp" in proc.stderr.read()


def seccomp_modes(pid):
    """Thread name -> its Seccomp mode (0 none, 2 filter)."""
    modes = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Seccomp:"):
                    modes[name] = int(line.split()[1])
        except FileNotFoundError:
            pass
    return modes


def test_every_thread_runs_filtered(ember, guest, tmp_path):
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    path = tmp_path / "vm.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([str(ember), "--api-sock", str(tmp_path / "api.sock"),
                             "--config-file", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        modes = {}
        while time.monotonic() < deadline:
            modes = seccomp_modes(proc.pid)
            if set(modes) >= {"ember", "api", "vcpu0"} and set(modes.values()) == {2}:
                break
            time.sleep(0.05)
        assert modes.get("api") == 2 and modes.get("vcpu0") == 2, modes
        assert modes.get("ember") == 2, f"the VMM thread is filtered once the guest runs: {modes}"
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == EXIT_SIGTERM, proc.stderr.read().decode()


def test_a_custom_filter_file_is_used(ember, guest, tmp_path):
    """Without --api-sock too: the built-in filters are not used, and the
    VMM thread's first loop turn is denied."""
    filters = filters_without(ember, tmp_path, "vmm")
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    run = run_ember(ember, tmp_path, config, ["--seccomp-filter", str(filters)], timeout=60)
    assert run.code == EXIT_BAD_SYSCALL, run
    assert "the vmm thread's filter denied system call" in run.log, run
    assert "(epoll_wait)" in run.log or "(epoll_pwait)" in run.log, run


@pytest.mark.parametrize("content,needle", [
    (b"", "bad magic"),
    (b"EMBERBPF\x02\x00\x00\x00", "version 2 is not 1"),
    (b"EMBERBPF\x01\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00vmm\x05", "truncated"),
])
def test_a_bad_filter_file_is_refused(ember, guest, tmp_path, content, needle):
    (tmp_path / "filters.bin").write_bytes(content)
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    run = run_ember(ember, tmp_path, config, ["--seccomp-filter", str(tmp_path / "filters.bin")])
    assert run.code == EXIT_BAD_CONFIGURATION, run
    assert needle in run.log, run


def test_a_filter_file_without_a_thread_kind_is_refused(ember, guest, tmp_path):
    policy = json.loads(POLICY.read_text())
    del policy["api"]
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    subprocess.run([str(seccompiler(ember)), "--input", str(tmp_path / "policy.json"),
                    "--output", str(tmp_path / "filters.bin")], check=True)
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    run = run_ember(ember, tmp_path, config, ["--seccomp-filter", str(tmp_path / "filters.bin")])
    assert run.code == EXIT_BAD_CONFIGURATION, run
    assert "none for the 'api' thread" in run.log, run
    missing = run_ember(ember, tmp_path, config, ["--seccomp-filter", "/nonexistent/f.bin"])
    assert missing.code == EXIT_BAD_CONFIGURATION and "/nonexistent/f.bin" in missing.log
