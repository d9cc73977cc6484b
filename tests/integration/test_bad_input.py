"""Bad configuration and command lines: each gets a message that names the
field or file, a non-zero exit code, and leaves nothing behind. None of
these boots a guest, so they take milliseconds."""

import json
import os

import pytest

from conftest import EXIT_ARG_PARSING, EXIT_BAD_CONFIGURATION, EXIT_OK, boot_config, run_ember


def machine(vcpus, mem):
    return {"vcpu_count": vcpus, "mem_size_mib": mem}


def config_cases(guest, tmp_path):
    not_a_kernel = tmp_path / "notes.txt"
    not_a_kernel.write_text("this is not a kernel\n" * 100)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    vmlinux = str(guest["vmlinux"])
    good = boot_config(vmlinux)
    return {
        "missing kernel": ({"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}},
                           "The kernel file cannot be opened: No such file or directory (os "
                           "error 2) (boot-source.kernel_image_path '/nonexistent/vmlinux')"),
        "not a kernel": ({"boot-source": {"kernel_image_path": str(not_a_kernel)}},
                         "is neither an ELF vmlinux nor a bzImage"),
        "missing initrd": (boot_config(vmlinux, "/nonexistent/initrd.cpio"),
                           "/nonexistent/initrd.cpio"),
        # Opened, a FIFO would hold the reader until a writer came.
        "kernel a FIFO": ({"boot-source": {"kernel_image_path": str(fifo)}},
                          f"The kernel file is a FIFO; name a regular file "
                          f"(boot-source.kernel_image_path '{fifo}')"),
        "initrd a FIFO": (boot_config(vmlinux, str(fifo)), "The initrd file is a FIFO"),
        "drive a FIFO": ({**good, "drives": [
            {"drive_id": "data", "path_on_host": str(fifo), "is_root_device": False}]},
            f"{fifo} is a FIFO; name a regular file or block device (drives[data].path_on_host)"),
        "mem 0": ({**good, "machine-config": machine(1, 0)}, "machine-config.mem_size_mib"),
        "mem beyond host": ({**good, "machine-config": machine(1, 1 << 30)},
                            "exceeds the host's"),
        "vcpus 0": ({**good, "machine-config": machine(0, 128)},
                    "machine-config.vcpu_count must be between 1 and 32, got 0"),
        "vcpus 33": ({**good, "machine-config": machine(33, 128)},
                     "machine-config.vcpu_count must be between 1 and 32, got 33"),
        "unknown top field": ({**good, "kernel": "x"}, "unknown field 'kernel'"),
        "unknown nested field": (
            {**good, "machine-config": {**machine(1, 128), "mem_mib": 1}},
            "machine-config: unknown field 'mem_mib'"),
        "wrong type": ({**good, "machine-config": machine("1", 128)},
                       "machine-config.vcpu_count must be an integer"),
        "malformed JSON": (json.dumps(good)[:-3], "malformed JSON at byte"),
        "no boot source": ({"machine-config": machine(1, 128)}, "boot-source is missing"),
        "hotplug not in slots": (
            {**good, "memory-hotplug": {"total_size_mib": 1000}},
            "memory-hotplug.total_size_mib 1000 must be a non-zero multiple of slot_size_mib "
            "(128)"),
        "pmem without a file": ({**good, "pmem": [{"id": "p"}]},
                                "pmem[].path_on_host is required"),
        "mmds on no interface": ({**good, "mmds-config": {"network_interfaces": ["eth0"]}},
                                 "does not correspond to any existing network interface"),
        "reserved vsock cid": ({**good, "vsock": {"guest_cid": 2, "uds_path": "v.sock"}},
                               "vsock.guest_cid 2 is reserved (0-2); use 3 or more"),
        "bad guest mac": ({**good, "network-interfaces": [
            {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "00:11"}]},
            "network-interfaces[eth0].guest_mac '00:11'"),
        # Opened as the file is read, as Firecracker does; its words.
        "missing drive file": ({**good, "drives": [
            {"drive_id": "rootfs", "path_on_host": "/nonexistent/rootfs.ext4",
             "is_root_device": True}]},
            "Error manipulating the backing file: No such file or directory (os error 2) "
            "/nonexistent/rootfs.ext4 (drives[rootfs].path_on_host)"),
        "mac used twice": ({**good, "network-interfaces": [
            {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"},
            {"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "06:00:00:00:00:01"}]},
            "The MAC address is already in use: 06:00:00:00:00:01"),
    }


CASES = ["missing kernel", "not a kernel", "missing initrd", "kernel a FIFO", "initrd a FIFO",
         "drive a FIFO", "mem 0", "mem beyond host",
         "vcpus 0", "vcpus 33", "unknown top field", "unknown nested field", "wrong type",
         "malformed JSON", "no boot source", "hotplug not in slots", "missing drive file", "bad guest mac",
         "mac used twice"]


@pytest.mark.parametrize("case", CASES)
def test_bad_configuration_is_refused_with_a_clear_message(ember, guest, tmp_path, case):
    config, message = config_cases(guest, tmp_path)[case]
    before = sorted(os.listdir(tmp_path))
    run = run_ember(ember, tmp_path, config, timeout=30)
    assert run.code == EXIT_BAD_CONFIGURATION, run
    assert message in run.log, run
    assert run.console == "", "nothing ran"
    after = sorted(os.listdir(tmp_path))
    assert after == sorted(set(before) | {"vm.json"}), "nothing left behind"


def test_missing_config_file(ember, tmp_path):
    run = run_ember(ember, tmp_path, args=["--no-api", "--config-file", "/nonexistent/vm.json"],
                    timeout=30)
    assert run.code == EXIT_BAD_CONFIGURATION, run
    assert "/nonexistent/vm.json" in run.log


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown argument '--bogus'"),
    (["--no-api"], "--no-api needs --config-file"),
    (["--no-api", "--config-file", "x", "--id", "bad/id"], "--id 'bad/id'"),
    (["--config-file"], "--config-file needs a value"),
    (["--module", "vmm::devices"], "Ember filters by source path"),
])
def test_bad_command_line(ember, tmp_path, args, message):
    run = run_ember(ember, tmp_path, args=args, timeout=30)
    assert run.code == EXIT_ARG_PARSING, run
    assert message in run.log, run
    assert "Usage: ember" in run.log


def test_module_lets_through_only_lines_from_below_its_path(ember, tmp_path):
    args = ["--no-api", "--config-file", "/nonexistent/vm.json", "--show-log-origin"]
    run = run_ember(ember, tmp_path, args=[*args, "--module", "src/main"], timeout=30)
    assert run.code == EXIT_BAD_CONFIGURATION, run
    lines = run.log.splitlines()
    assert any("/nonexistent/vm.json" in line for line in lines), run
    assert all("[main.cc:" in line for line in lines), run
    run = run_ember(ember, tmp_path, args=[*args, "--module", "src/devices"], timeout=30)
    assert run.code == EXIT_BAD_CONFIGURATION and run.log == "", run


def test_help_and_version(ember, tmp_path):
    help_run = run_ember(ember, tmp_path, args=["--help"], timeout=30)
    assert help_run.code == EXIT_OK
    assert "--config-file FILE" in help_run.console
    version = run_ember(ember, tmp_path, args=["--version"], timeout=30)
    assert version.code == EXIT_OK
    assert version.console.startswith("Ember v")
