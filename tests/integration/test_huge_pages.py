"""machine-config.huge_pages with a real guest: "2M" backs guest memory
with the host's hugetlbfs pages and "Transparent" advises it for THP while
a guest runs programs; a snapshot of a 2M guest loads only through Uffd or
with its huge pages turned off."""

import fcntl
import re
import time
from pathlib import Path

import pytest

from conftest import (EXIT_OK, boot_config, guest_mappings, huge_page_pool, is_pvm_host,
                      run_ember, unreserved_huge_pages)
from guest_shell import GuestShell, shell_boot_args
from test_api import Api
from test_snapshot import IDLE_ARGS, load, reboot_and_wait, uffd_loaded

MEM_MIB = 128



def test_a_pool_too_small_is_a_clear_error_before_the_guest_runs(ember, guest, tmp_path):
    """The pool is reserved at the start (no SIGBUS later): a guest one page
    larger than what is free fails to start, saying what to do."""
    lock = open("/tmp/ember-test-hugepages.lock", "a")  # nobody grows the pool meanwhile
    fcntl.flock(lock, fcntl.LOCK_EX)
    with lock:
        if int(Path("/proc/sys/vm/nr_overcommit_hugepages").read_text()) > 0:
            pytest.skip("surplus huge pages make any pool long enough")
        mib = (unreserved_huge_pages() + 1) * 2
        config = boot_config(guest["vmlinux"], mem_mib=mib)
        config["machine-config"]["huge_pages"] = "2M"
        run = run_ember(ember, tmp_path, config, timeout=60)
    assert run.code == 1, run  # the host lacks memory: not the configuration's fault
    assert f'huge_pages "2M": {mib} MiB of guest memory from the host\'s hugetlbfs pool' in (
        run.log), run
    assert "/proc/sys/vm/nr_hugepages" in run.log


def shell_guest(ember, guest, tmp_path, huge_pages):
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args(), mem_mib=MEM_MIB)
    config["machine-config"]["huge_pages"] = huge_pages
    config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                         "is_root_device": True, "is_read_only": True}]
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
    except BaseException:
        shell.close()  # its reserved huge pages with it
        raise
    return shell


@pytest.mark.usefixtures("kvm")
def test_2m_guest_memory_comes_from_the_hugetlbfs_pool(ember, guest, tmp_path):
    with huge_page_pool(MEM_MIB):
        free_before = unreserved_huge_pages()
        shell = shell_guest(ember, guest, tmp_path, "2M")
        try:
            # The guest runs programs on it, and sees all of it.
            total = int(shell.check("grep MemTotal /proc/meminfo").split()[1])
            assert total > (MEM_MIB - 32) * 1024, total
            assert shell.check("echo huge $((6 * 7))").strip() == "huge 42"
            [mapping] = guest_mappings(shell.proc.pid, MEM_MIB)
            assert mapping["KernelPageSize"] == "2048 kB", mapping
            assert int(mapping["Private_Hugetlb"].split()[0]) > 0, mapping
            assert " dc" in " " + mapping["VmFlags"], "no fork copies guest memory"
            # Reserved whole at the start: pages in use or reserved for the
            # guest are all of its memory.
            assert free_before - unreserved_huge_pages() == MEM_MIB // 2, free_before
            assert shell.request("GET", "/machine-config")[1]["huge_pages"] == "2M"
            assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
        finally:
            shell.close()
        assert unreserved_huge_pages() == free_before, "all pages back in the pool"


@pytest.mark.usefixtures("kvm")
def test_transparent_guest_memory_is_advised_for_huge_pages(ember, guest, tmp_path):
    shell = shell_guest(ember, guest, tmp_path, "Transparent")
    try:
        assert shell.check("echo thp $((6 * 7))").strip() == "thp 42"
        # The kernel's range may be mapped from its file (and, with "None",
        # is advised MADV_HUGEPAGE alone); the rest of guest memory, far
        # larger than the kernel, is advised too ("hg").
        advised = []
        for line in Path(f"/proc/{shell.proc.pid}/smaps").read_text().splitlines():
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            elif line.startswith("VmFlags:") and " hg" in line and hi - lo >= 64 << 20:
                advised.append(hi - lo)
        assert advised, "no large mapping of guest memory advised MADV_HUGEPAGE"
        assert shell.request("GET", "/vm/config")[1]["machine-config"]["huge_pages"] == (
            "Transparent")
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()


@pytest.mark.usefixtures("kvm")
def test_a_2m_snapshot_loads_through_uffd_or_without_huge_pages(ember, guest, tmp_path):
    with huge_page_pool(MEM_MIB):
        (tmp_path / "orig").mkdir()
        a = Api(ember, tmp_path / "orig")
        try:
            assert a.request("PUT", "/boot-source", {
                "kernel_image_path": str(guest["vmlinux"]),
                "initrd_path": str(guest["initramfs.cpio"]), "boot_args": IDLE_ARGS})[0] == 204
            assert a.request("PUT", "/machine-config", {
                "vcpu_count": 1, "mem_size_mib": MEM_MIB, "huge_pages": "2M"})[0] == 204
            assert a.request("PUT", "/actions", {"action_type": "InstanceStart"})[0] == 204
            deadline = time.monotonic() + 300
            while "Run /init as init process" not in a.console():
                assert time.monotonic() < deadline, a.console()
                time.sleep(0.5)
            time.sleep(2)
            assert a.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
            files = {"state": tmp_path / "vm.snap", "mem": tmp_path / "vm.mem"}
            assert a.request("PUT", "/snapshot/create", {
                "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})[0] == 204
        finally:
            a.stop()

        # A File backend cannot give hugetlbfs pages: refused, nothing built.
        (tmp_path / "file").mkdir()
        b = Api(ember, tmp_path / "file")
        try:
            status, reply = load(b, files)
            assert status == 400 and "needs mem_backend Uffd" in reply["fault_message"], reply
            assert b.request("GET", "/")[1]["state"] == "Not started"
            # The same snapshot on small pages goes on.
            status, reply = load(b, files, huge_pages="None")
            assert status == 204, reply
            config = b.request("GET", "/vm/config")[1]
            assert config["machine-config"]["huge_pages"] == "None"
            reboot_and_wait(b)
        finally:
            b.stop()

        # Through Uffd, the handler fills whole 2 MiB pages.
        (tmp_path / "uffd").mkdir()
        with uffd_loaded(ember, tmp_path / "uffd", files) as (c, regions):
            assert '"page_size":2097152' in regions, regions
            [mapping] = guest_mappings(c.proc.pid, MEM_MIB)
            assert mapping["KernelPageSize"] == "2048 kB", mapping
            if not is_pvm_host():
                reboot_and_wait(c)
