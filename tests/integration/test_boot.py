"""Boots the project's own guest kernel to init, in both formats Ember
loads, with one and two vCPUs, and checks that a guest reset ends Ember
cleanly. Each boot is a real Linux guest on real KVM."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import EXIT_OK, EXIT_SIGTERM, boot_config, is_pvm_host, run_ember

REACHED_INIT = "Run /init as init process"


@pytest.mark.usefixtures("kvm")
@pytest.mark.parametrize("image", ["vmlinux", "bzImage"])
def test_kernel_reaches_init_and_reset_stops_ember(ember, guest, tmp_path, image):
    config = boot_config(guest[image], guest["initramfs.cpio"])
    console_file = tmp_path / "console.log"
    if image == "bzImage":
        # One of the two boots sends its console to a file instead of stdout.
        config["serial"] = {"serial_out_path": str(console_file)}
    # The vmlinux boot also has the boot timer: init writes its byte through
    # /dev/mem as its first system calls.
    run = run_ember(ember, tmp_path, config, args=["--boot-timer"] if image == "vmlinux" else None)
    if image == "bzImage":
        assert run.console == "", "the console went to serial_out_path"
        run.console = console_file.read_text(errors="replace")
    assert REACHED_INIT in run.console, run
    # Init prints from user space and asks for a reboot; with reboot=k that
    # is the i8042 reset, which must end Ember with 0 after joining its
    # threads. On PVM hosts this needs Ember's "pvmuser" (src/vmm/host.h).
    assert "ember-init: hello from user space" in run.console, run
    assert "guest reset through the i8042" in run.log, run
    assert "all vCPU threads joined" in run.log, run
    assert run.code == EXIT_OK, run
    if image == "vmlinux":
        assert "Linux version 6.1" in run.console
        assert "guest boot complete (boot timer)" in run.log, run
    if "rdrand" in Path("/proc/cpuinfo").read_text():
        # Seeded at boot (CONFIG_RANDOM_TRUST_CPU): an unseeded crng has a
        # work item poll every 2 s, waking an idle guest (density.md).
        assert "random: crng init done" in run.console, run
    if is_pvm_host():
        assert "noxsave clearcpuid=popcnt,cx16,smap,smep noint3selftest pvmuser" in run.console
        assert "PVM host (KVM in software): added guest boot args" in run.log
        assert "pvmuser: system calls from page faults" in run.console, run
    else:
        assert "noxsave" not in run.console and "pvmuser" not in run.console


@pytest.mark.usefixtures("kvm")
def test_without_boot_args_the_guest_gets_firecrackers_command_line(ember, guest, tmp_path):
    """No boot_args: Firecracker's default command line (no serial port, no
    i8042 probing) with pci=off. The guest still boots to init, which
    says so through the boot timer, and still resets through the i8042."""
    config = boot_config(guest["vmlinux"], guest["initramfs.cpio"])
    del config["boot-source"]["boot_args"]
    run = run_ember(ember, tmp_path, config, args=["--boot-timer"])
    assert "guest boot complete (boot timer)" in run.log, run
    assert "guest reset through the i8042" in run.log, run
    assert run.code == EXIT_OK, run
    assert "Linux version" not in run.console, "8250.nr_uarts=0: no serial console"


def test_kernel_on_a_read_only_file_system_is_mapped_and_boots(ember, guest, tmp_path):
    """A kernel and initrd on a file system read-only at its superblock
    are mapped into guest memory instead of copied (src/vmm/boot.h); the
    guest must boot from them to user space and reset as from a copy."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(ro)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        for name in ("vmlinux", "initramfs.cpio"):
            shutil.copy(guest[name], ro / name)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        run = run_ember(ember, tmp_path, boot_config(ro / "vmlinux", ro / "initramfs.cpio"))
    finally:
        # Lazily: an Ember still holding the mapping must not leave it mounted.
        subprocess.run(["umount", "--lazy", str(ro)], check=False)
    assert "KiB of the kernel and initrd mapped from their files, not copied (read-only file system)" in run.log, run
    assert "ember-init: hello from user space" in run.console, run
    assert "guest reset through the i8042" in run.log, run
    assert run.code == EXIT_OK, run


def vcpu_cpu_ticks(pid, name):
    """utime + stime of the thread called `name` in process `pid`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
    raise AssertionError(f"no thread {name}")


@pytest.mark.usefixtures("kvm")
def test_two_vcpus(ember, guest, tmp_path, microvms):
    vm = microvms(ember, tmp_path,
                  boot_config(guest["vmlinux"], guest["initramfs.cpio"], vcpus=2))
    if not is_pvm_host():
        assert vm.wait_for_console(REACHED_INIT), vm.console()
        assert "smp: Brought up 1 node, 2 CPUs" in vm.console()
        assert vm.wait() == EXIT_OK, vm.log()
        return
    # On PVM hosts secondary CPUs never come up: the kernel sends INIT/SIPI
    # and waits forever at "Booting SMP configuration", under QEMU as under
    # Ember. What Ember owes there: the MP table describes both CPUs, the
    # second vCPU runs, and SIGTERM still stops everything in order.
    assert vm.wait_for_console("x86: Booting SMP configuration"), vm.console()
    console = vm.console()
    assert "MPTABLE: OEM ID: EMBER" in console
    assert "Processor #1" in console, "the MP table lists CPU 1"
    assert "smpboot: Allowing 2 CPUs" in console
    # The SIPI follows the console line; under load it can take a moment.
    deadline = time.monotonic() + 30
    while vcpu_cpu_ticks(vm.proc.pid, "vcpu1") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vcpu_cpu_ticks(vm.proc.pid, "vcpu1") > 0, "the AP left wait-for-SIPI and ran"
    vm.proc.terminate()
    assert vm.wait() == EXIT_SIGTERM, vm.log()
    assert "received Terminated; stopping the VM" in vm.log()
    assert "all vCPU threads joined" in vm.log()
