"""virtio-blk with a real Linux guest, checked from both sides: programs in
the guest read what the host put on a drive, write what the host then finds
in the image, fail to write a read-only drive, and see a drive swapped
under them by PATCH /drives, and read a rate-limited drive at its
bucket's rate; and the guest kernel mounts a read-only root
read-only whatever its command line says."""

import hashlib
import os
import shutil
import subprocess
import time

from conftest import EXIT_OK, boot_config, run_ember
from guest_shell import GuestShell, shell_boot_args

ROOT_MOUNTED = "VFS: Mounted root (ext4 filesystem)"
# 1 MiB read through a 256 KiB/s bucket: at least 3.75 s after the first 64 KiB.
LIMITED_SIZE = 1 << 20
LIMITED_BUCKET = {"size": 64 << 10, "refill_time": 250}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def drive(drive_id, path, root=False, read_only=False, engine="Sync"):
    return {"drive_id": drive_id, "path_on_host": str(path), "is_root_device": root,
            "is_read_only": read_only, "io_engine": engine}


def md5(data):
    return hashlib.md5(data).hexdigest()


def ext4_image(path, files, size="16M"):
    """An ext4 image holding `files` ({name: bytes}), made without a mount."""
    tree = path.parent / (path.name + ".d")
    tree.mkdir()
    for name, data in files.items():
        (tree / name).write_bytes(data)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(path), size], check=True)


def debugfs_cat(image, name):
    return subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True,
                          check=True).stdout


def test_guest_reads_writes_and_sees_a_swapped_drive(ember, guest, tmp_path):
    root = tmp_path / "rootfs.ext4"
    shutil.copy(guest["rootfs.ext4"], root)
    host_file = os.urandom(300 * 1024)
    data = tmp_path / "data.ext4"
    ext4_image(data, {"from-host.bin": host_file})
    ro_file, swapped_file = os.urandom(100 * 1024), os.urandom(200 * 1024)
    ro = tmp_path / "ro.ext4"
    ext4_image(ro, {"file": ro_file})
    ro_digest = sha256(ro)
    swapped = tmp_path / "swapped.ext4"
    ext4_image(swapped, {"file": swapped_file}, size="32M")

    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args())
    # The data drive runs on the io_uring engine, the others on the
    # synchronous one.
    # A fourth drive is held to its rate limiter's bucket.
    limited = tmp_path / "limited.img"
    limited.write_bytes(bytes(LIMITED_SIZE))
    config["drives"] = [drive("rootfs", root, root=True, read_only=True),
                        drive("data", data, engine="Async"),
                        drive("ro", ro, read_only=True),
                        {**drive("limited", limited, read_only=True),
                         "rate_limiter": {"bandwidth": LIMITED_BUCKET}}]
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        # The guest reads the host's file.
        shell.check("mount -t ext4 /dev/vdb /mnt")
        assert shell.check("md5sum /mnt/from-host.bin").split()[0] == md5(host_file)

        # The guest writes a file and syncs; the host checks it after exit.
        out = shell.check("dd if=/dev/urandom of=/mnt/from-guest.bin bs=4096 count=96 2>&1 && "
                          "sync && md5sum /mnt/from-guest.bin")
        guest_digest = out.split()[-2]

        # The read-only drive: the guest kernel sees it read-only, mounts its
        # ext4 read-only though asked for read-write, and a write to a file
        # there fails with EROFS (to the raw disk, with EPERM).
        assert shell.check("cat /sys/block/vdc/ro") == "1\n"
        shell.check("mkdir /tmp/ro && mount -t ext4 /dev/vdc /tmp/ro")
        assert shell.check("md5sum /tmp/ro/file").split()[0] == md5(ro_file)
        status, out = shell.run("echo x >> /tmp/ro/file")
        assert status != 0 and b"Read-only file system" in out, (status, out)
        status, out = shell.run("dd if=/dev/zero of=/dev/vdc bs=512 count=1")
        assert status != 0 and b"Operation not permitted" in out, (status, out)
        shell.check("umount /tmp/ro")

        # PATCH /drives swaps the file under the running guest: it sees the
        # new size (the config interrupt) and, past its cache, the new file
        # system.
        status, reply = shell.request("PATCH", "/drives/ro",
                                      {"drive_id": "ro", "path_on_host": str(swapped)})
        assert status == 204, reply
        shell.check("i=0; while [ $(cat /sys/block/vdc/size) != 65536 ]; do"
                    " i=$((i+1)); [ $i -lt 60 ] || exit 1; sleep 1; done")
        shell.check("blockdev --flushbufs /dev/vdc && mount -t ext4 -o ro /dev/vdc /tmp/ro")
        assert shell.check("md5sum /tmp/ro/file").split()[0] == md5(swapped_file)
        shell.check("umount /tmp/ro")

        shell.check("umount /mnt")

        # dd reads the whole limited drive: after the full bucket it takes,
        # the rest comes at the bucket's rate. Timed with the host's clock,
        # the limiter's own: an emulated guest's clock can run slow.
        start = time.monotonic()
        out = shell.check("dd if=/dev/vdd of=/dev/null bs=64k 2>&1")
        elapsed = time.monotonic() - start
        assert "16+0 records in" in out, out
        rate = LIMITED_BUCKET["size"] / (LIMITED_BUCKET["refill_time"] / 1000)
        least = (LIMITED_SIZE - LIMITED_BUCKET["size"]) / rate
        assert 0.9 * least <= elapsed < 3 * least + 10, (elapsed, least)

        assert shell.ctrl_alt_del() == EXIT_OK, shell.log()
    finally:
        shell.close()

    assert md5(debugfs_cat(data, "from-guest.bin")) == guest_digest
    assert len(debugfs_cat(data, "from-guest.bin")) == 96 * 4096
    subprocess.run(["e2fsck", "-fn", str(data)], check=True, capture_output=True)
    assert sha256(ro) == ro_digest, "a read-only drive must not change"


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
