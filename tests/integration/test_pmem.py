"""virtio-pmem (Firecracker's pmem): checked at the PUT as a drive is, one
root device among pmem devices and drives, written back by GET /vm/config;
with a real guest, the project's root file system boots from /dev/pmem0,
and a flush from the guest reaches the host's file."""

import pytest

from conftest import EXIT_OK, NOT_SUPPORTED_BEFORE_START, boot_config
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import total
from test_api import Api


def test_pmem_devices_are_checked_at_the_put(ember, tmp_path):
    backing = tmp_path / "pmem0.img"
    backing.write_bytes(b"\0" * 4096)
    a = Api(ember, tmp_path)
    try:
        p0 = {"id": "p0", "path_on_host": str(backing), "root_device": True, "read_only": True}
        assert a.request("PUT", "/pmem/p0", p0)[0] == 204
        a.expect_fault("PUT", "/pmem/p1", "pmem[p1].path_on_host /nonexistent/pmem",
                       {"id": "p1", "path_on_host": "/nonexistent/pmem"})
        a.expect_fault("PUT", "/pmem/p1", "does not match the id from the body",
                       {"id": "p2", "path_on_host": str(backing)})
        a.expect_fault("PUT", "/drives/rootfs", "Drive config error: Attempt to add block as a "
                       "root device while the root device defined as a pmem device.",
                       {"drive_id": "rootfs", "path_on_host": str(backing),
                        "is_root_device": True})
        a.expect_fault("PATCH", "/pmem/p0", NOT_SUPPORTED_BEFORE_START,
                       {"id": "p0", "rate_limiter": {"ops": {"size": 1, "refill_time": 100}}})
        config = a.request("GET", "/vm/config")[1]
        assert config["pmem"] == [{**p0, "rate_limiter": None}], config["pmem"]
        # A snapshot's configuration would replace it: refused, as in Firecracker.
        a.expect_fault("PUT", "/snapshot/load", "has not been configured",
                       {"snapshot_path": str(tmp_path / "s"), "mem_backend": {
                           "backend_type": "File", "backend_path": str(tmp_path / "m")}})
    finally:
        a.stop()


@pytest.mark.usefixtures("kvm")
def test_the_guest_boots_from_pmem_and_its_flushes_reach_the_file(ember, guest, tmp_path):
    data = tmp_path / "data.img"
    data.write_bytes(b"\0" * (3 << 20))  # not a 2 MiB multiple: the end is padded
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args())
    config["pmem"] = [
        {"id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]), "root_device": True,
         "read_only": True},
        {"id": "data", "path_on_host": str(data)},
    ]
    metrics = tmp_path / "metrics.json"
    config["metrics"] = {"metrics_path": str(metrics)}
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        # The kernel mounts its root as /dev/root: the device numbers say which.
        root = shell.check("awk '$5 == \"/\" {print $3}' /proc/self/mountinfo").strip()
        assert root == shell.check("cat /sys/block/pmem0/dev").strip(), root
        size = shell.check("cat /sys/block/pmem1/size").strip()
        assert int(size) * 512 == 4 << 20, size
        shell.check("printf ember-pmem > /dev/pmem1 && sync /dev/pmem1")
        assert data.read_bytes()[:10] == b"ember-pmem"
        # The bytes are in the shared mapping either way: the flush is what
        # the device must have seen, and answered without a failure.
        assert shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
        assert total(metrics, "pmem_data", "queue_event_count") >= 1
        assert total(metrics, "pmem_data", "event_fails") == 0
        assert shell.request("PATCH", "/pmem/data", {
            "id": "data", "rate_limiter": {"ops": {"size": 1, "refill_time": 1000}}})[0] == 204
        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()
