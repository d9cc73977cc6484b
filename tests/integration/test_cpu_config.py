"""PUT /cpu-config (a custom CPU template): checked field by field before
the start, and with a real guest, a CPUID feature the template clears is
gone from the guest's /proc/cpuinfo while the rest of the VM's CPUID (its
topology) is Ember's; machine-config.smt makes vCPU pairs the threads of
one core in the guest's eyes. machine-config.cpu_template's static
templates are taken only on the host models each was made for, and with
a real guest, hide what the named instance type's CPU lacks."""

import re
from pathlib import Path

import pytest

from conftest import EXIT_OK, boot_config, run_ember
from guest_shell import GuestShell, shell_boot_args
from test_api import Api, raw_request

# Firecracker's list: (vendor, family, model, stepping) as /proc/cpuinfo
# gives them.
SKYLAKE = ("GenuineIntel", 6, 0x55, 4)
CASCADE_LAKE = ("GenuineIntel", 6, 0x55, 7)
ICE_LAKE = ("GenuineIntel", 6, 0x6a, 6)
MILAN = ("AuthenticAMD", 0x19, 0x1, 1)
MADE_FOR = {"C3": [SKYLAKE, CASCADE_LAKE, ICE_LAKE], "T2": [SKYLAKE, CASCADE_LAKE, ICE_LAKE],
            "T2S": [SKYLAKE, CASCADE_LAKE], "T2CL": [CASCADE_LAKE, ICE_LAKE], "T2A": [MILAN]}


def shell_config(guest, vcpus=1):
    """A guest with a shell on the project's root file system."""
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args(), vcpus=vcpus)
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    return config


def host_cpu():
    info = Path("/proc/cpuinfo").read_text()
    field = lambda name: re.search(rf"^{name}\s*: (.*)$", info, re.M).group(1)
    return (field("vendor_id"), int(field("cpu family")), int(field("model")),
            int(field("stepping")))

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
    config = shell_config(guest, vcpus=2)
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
    config = shell_config(guest, vcpus=2)
    config["machine-config"]["smt"] = smt
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


def test_static_templates_are_taken_only_on_the_models_they_were_made_for(ember, tmp_path):
    a = Api(ember, tmp_path)
    host = host_cpu()
    try:
        for name, models in MADE_FOR.items():
            body = {"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": name}
            if host in models:
                status, headers, _ = raw_request(a.sock, "PUT", "/machine-config", body)
                assert (status, headers.get("deprecation")) == (204, "true"), headers
                assert a.request("GET", "/machine-config")[1]["cpu_template"] == name
                # One slot: a custom template replaces it.
                assert a.request("PUT", "/cpu-config", NO_RDRAND)[0] == 204
                assert "cpu_template" not in a.request("GET", "/machine-config")[1]
            else:
                a.expect_fault("PUT", "/machine-config", f'"{name}" is made for', body)
                a.expect_fault("PATCH", "/machine-config", "; this host is ",
                               {"cpu_template": name})
        assert "cpu_template" not in a.request("GET", "/vm/config")[1]["machine-config"]
        a.expect_fault("PATCH", "/machine-config", "'t2' must be \"C3\", \"T2\"",
                       {"cpu_template": "t2"})
    finally:
        a.stop()


def test_a_config_file_with_a_template_for_another_host_fails_with_its_reason(ember, tmp_path):
    host = host_cpu()
    foreign = next((n for n, models in MADE_FOR.items() if host not in models), None)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0" * 4096)
    config = boot_config(kernel)
    config["machine-config"]["cpu_template"] = foreign
    run = run_ember(ember, tmp_path, config)
    assert run.code != 0, run
    assert f'machine-config.cpu_template "{foreign}" is made for' in run.log, run


@pytest.mark.usefixtures("kvm")
def test_a_static_template_hides_what_its_instance_type_lacks(ember, guest, tmp_path):
    host = host_cpu()
    name = next((n for n, models in MADE_FOR.items() if host in models), None)
    if name is None:
        pytest.skip(f"no static template is made for this host's CPU {host}")
    config = shell_config(guest)
    config["machine-config"]["cpu_template"] = name
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        flags = shell.check("grep -m1 '^flags' /proc/cpuinfo").split()
        for hidden in ("avx512f", "vmx", "sgx", "pku"):
            assert hidden not in flags, (name, hidden)
        assert "hypervisor" in flags
        # Ivy Bridge-EP (C3) or Haswell-EP (the T2 family), on any host.
        model = shell.check("grep -m1 '^model\\s*:' /proc/cpuinfo")
        assert model.split(":")[1].strip() == ("62" if name == "C3" else "63"), model
        assert shell.request("GET", "/machine-config")[1]["cpu_template"] == name
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()
