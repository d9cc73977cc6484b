"""virtio-blk with a real Linux guest: its root file system on a drive,
read-write and read-only, and a second drive. The guest's user space can't
run on PVM hosts, so these watch what the guest kernel does: probe the
disks, mount ext4 (which writes the superblock on a read-write mount), and
reach init."""

import hashlib
import shutil
import subprocess

from conftest import EXIT_OK, boot_config, run_ember

ROOT_MOUNTED = "VFS: Mounted root (ext4 filesystem)"


def mount_count(image):
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True,
                         check=True).stdout
    return int(next(l for l in out.splitlines() if l.startswith("Mount count:")).split(":")[1])


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def drive(drive_id, path, root=False, read_only=False, engine="Sync"):
    return {"drive_id": drive_id, "path_on_host": str(path), "is_root_device": root,
            "is_read_only": read_only, "io_engine": engine}


def test_read_write_root_and_a_read_only_data_drive(ember, guest, tmp_path):
    root = tmp_path / "rootfs.ext4"
    shutil.copy(guest["rootfs.ext4"], root)
    data = tmp_path / "data.img"
    data.write_bytes(b"\x5a" * (1 << 20))
    before = mount_count(root)

    config = boot_config(guest["vmlinux"])
    # The root drive runs on the io_uring engine, the data drive on the
    # synchronous one.
    config["drives"] = [drive("data", data, read_only=True),
                        drive("rootfs", root, root=True, engine="Async")]
    run = run_ember(ember, tmp_path, config)

    assert "root=/dev/vda rw" in run.console, "the root drive comes first, read-write"
    assert "virtio_blk virtio0: [vda] 65536 512-byte logical blocks" in run.console, run
    assert "virtio_blk virtio1: [vdb] 2048 512-byte logical blocks" in run.console, run
    assert ROOT_MOUNTED + " on device" in run.console, run
    assert "Run /sbin/init as init process" in run.console, run
    assert run.code == EXIT_OK, run
    # ext4 counts mounts in its superblock: the guest really wrote the drive.
    assert mount_count(root) == before + 1
    assert data.read_bytes() == b"\x5a" * (1 << 20)
    subprocess.run(["e2fsck", "-fn", str(root)], check=True, capture_output=True)


def test_read_only_root_cannot_be_changed(ember, guest, tmp_path):
    root = tmp_path / "rootfs.ext4"
    shutil.copy(guest["rootfs.ext4"], root)
    digest = sha256(root)
    # The guest is told to mount it read-write; the drive must refuse.
    config = boot_config(guest["vmlinux"],
                         boot_args="console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw")
    config["drives"] = [drive("rootfs", root, read_only=True)]
    run = run_ember(ember, tmp_path, config)

    assert ROOT_MOUNTED + " readonly" in run.console, run
    assert "Run /sbin/init as init process" in run.console, run
    assert run.code == EXIT_OK, run
    assert sha256(root) == digest, "a read-only drive must not change"
