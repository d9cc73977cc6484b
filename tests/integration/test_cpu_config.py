"""PUT /cpu-config (a custom CPU template): checked field by field before
the start, and with a real guest, a CPUID feature the template clears is
gone from the guest's /proc/cpuinfo while the rest of the VM's CPUID (its
topology) is Ember's; machine-config.smt makes vCPU pairs the threads of
one core in the guest's eyes."""

from pathlib import Path

import pytest

from conftest import EXIT_OK, boot_config
from guest_shell import GuestShell, shell_boot_args
from test_api import Api

# CPUID.1:ECX bit 30 is RDRAND: the guest kernel runs without it.
NO_RDRAND = {"cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [
    {"register": "ecx", "bitmap": "0bx0xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}]}


def test_templates_are_checked_by_field_before_the_start(ember, tmp_path):
    a = Api(ember, tmp_path)
    try:
        a.expect_fault("PUT", "/cpu-config", "cpu-config.cpuid_modifiers[0].modifiers[0].register "
                       "'rax' must be one of eax, ebx, ecx, edx", {"cpuid_modifiers": [
                           {"leaf": "0x1", "subleaf": "0x0", "flags": 0,
                            "modifiers": [{"register": "rax", "bitmap": "0b1"}]}]})
        a.expect_fault("PUT", "/cpu-config", "has more than 64 bits",
                       {"msr_modifiers": [{"addr": "0x10a", "bitmap": "0b" + "1" * 65}]})
        a.expect_fault("PUT", "/cpu-config", "aarch64", {"vcpu_features": [
            {"index": 0, "bitmap": "0b1"}]})
        assert a.request("PUT", "/cpu-config", NO_RDRAND)[0] == 204
        written = a.request("GET", "/vm/config")[1]["cpu-config"]
        assert written["cpuid_modifiers"][0]["modifiers"] == [
            {"register": "ecx", "bitmap": "0bx0" + "x" * 30}], written
        assert written["kvm_capabilities"] == [] and written["msr_modifiers"] == []
        # As in Firecracker: "None" drops it, and {} is none.
        assert a.request("PATCH", "/machine-config", {"cpu_template": "None"})[0] == 204
        assert a.request("GET", "/vm/config")[1]["cpu-config"] is None
        assert a.request("PUT", "/cpu-config", NO_RDRAND)[0] == 204
        assert a.request("PUT", "/cpu-config", {})[0] == 204
        assert a.request("GET", "/vm/config")[1]["cpu-config"] is None
    finally:
        a.stop()


@pytest.mark.usefixtures("kvm")
def test_a_cleared_cpuid_feature_is_gone_in_the_guest(ember, guest, tmp_path):
    if " rdrand" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this host's CPU has no RDRAND to clear")
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args(), vcpus=2)
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    config["cpu-config"] = NO_RDRAND
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        flags = shell.check("grep -m1 '^flags' /proc/cpuinfo")
        assert " rdrand" not in flags, flags
        assert " hypervisor" in flags, "Ember's own CPUID bits are still there"
        assert shell.check("grep -c ^processor /proc/cpuinfo").strip() == "2"
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()


@pytest.mark.usefixtures("kvm")
@pytest.mark.parametrize("smt", [False, True])
def test_smt_pairs_vcpus_into_the_threads_of_a_core(ember, guest, tmp_path, smt):
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args(), vcpus=2)
    config["machine-config"]["smt"] = smt
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        siblings = shell.check("cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
        assert siblings.strip() == ("0-1" if smt else "0"), siblings
        assert shell.request("GET", "/machine-config")[1]["smt"] is smt
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()


@pytest.mark.usefixtures("kvm")
def test_a_leaf_kvm_does_not_support_fails_the_start(ember, guest, tmp_path):
    a = Api(ember, tmp_path)
    try:
        assert a.request("PUT", "/boot-source", {
            "kernel_image_path": str(guest["vmlinux"])})[0] == 204
        assert a.request("PUT", "/cpu-config", {"cpuid_modifiers": [
            {"leaf": "0x4fffffff", "subleaf": "0x0", "flags": 0, "modifiers": []}]})[0] == 204
        a.expect_fault("PUT", "/actions",
                       "CPUID leaf 0x4fffffff subleaf 0 is not one KVM supports on this host",
                       {"action_type": "InstanceStart"})
        assert a.request("GET", "/")[1]["state"] == "Not started"
    finally:
        a.stop()
