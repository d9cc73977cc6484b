"""The Firecracker Go SDK's own tests (v1.0.0, unchanged, one test binary
that tools/build-go-clients.sh builds) run against Ember installed as
their `firecracker`: TestMicroVMExecution and its MMDS v2 twin configure a
microVM through the SDK's real client (boot source, a TAP, root and
secondary drives, vsock, MMDS put/patch/get, a balloon), start it, read it
back, swap a drive, change a rate limiter and the balloon, and shut it
down; TestStartVMM and TestClient start the VMM bare.

Left out, with the reason:
- the subtests that put machine-config with cpu_template T2, which Ember
  takes, as Firecracker does today, only on the Intel CPUs T2 was made
  for (TestCreateMachine, TestMachineConfigApplication, and the tests
  built on it: TestStartVMMOnce, TestPID, TestWait, TestPauseResume, the
  snapshot and jailer tests);
- TestGetFirecrackerVersion inside TestMicroVMExecution: the SDK v1.0.0
  reads the version with the pattern `[0-9]\\.[0-9]\\.[0-9]`, which no
  two-digit minor version (Ember's, Firecracker 1.10's and later) matches,
  and the test then panics;
- TestLogAndMetrics: it matches Firecracker's own log line format;
- the CNI tests: Debian has no tc-redirect-tap plugin."""

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import ROOT
from test_clients import SDK_ENV, kill_running, sh

SDK_TEST = ROOT / "build" / "clients" / "go-sdk.test"
SDK_SRC = ROOT / "build" / "clients" / "gopath" / "src" / "github.com" / "firecracker-microvm" \
    / "firecracker-go-sdk"
SUBTESTS = ["TestCreateBootSource", "TestCreateNetworkInterface", "TestAttachRootDrive",
            "TestAttachSecondaryDrive", "TestAttachVsock", "SetMetadata", "UpdateMetadata",
            "GetMetadata", "TestCreateBalloon", "TestStartInstance", "TestGetInstanceInfo",
            "TestGetBalloonConfig", "TestGetBalloonStats", "TestUpdateGuestDrive",
            "TestUpdateGuestNetworkInterface", "TestUpdateBalloon", "TestUpdateBalloonStats",
            "TestShutdown"]
# The subtests TestMicroVMExecutionWithMmdsV2 has.
MMDS_V2_SUBTESTS = ["TestCreateBootSource", "TestCreateNetworkInterface", "TestAttachRootDrive",
                    "SetMetadata", "UpdateMetadata", "GetMetadata"]
TOP = ["TestClient", "TestStartVMM", "TestMicroVMExecution", "TestMicroVMExecutionWithMmdsV2"]


def busybox_init_image(rootfs, out):
    """A copy of the guest's root file system whose /sbin/init is busybox
    init: the SDK's kernel command line is its own (no "ember_shell"), and
    Ember's init would reboot at once without it, where the SDK's tests
    want a guest that stays up and takes Ctrl-Alt-Del."""
    shutil.copy(rootfs, out)
    for request in ("rm /sbin/init", "symlink /sbin/init /bin/busybox"):
        sh("debugfs", "-w", "-R", request, str(out))
    return out


@pytest.mark.usefixtures("kvm")
def test_the_go_sdks_own_vm_tests(ember, guest):
    if not SDK_TEST.exists():
        pytest.skip(f"{SDK_TEST} was not built: tools/build-go-clients.sh needs the git "
                    "repositories of firectl and firecracker-go-sdk (FIRECTL_GIT, GO_SDK_GIT)")
    # Short paths: the SDK puts its sockets under the working directory
    # and TMPDIR, and a Unix socket's path has at most 107 bytes.
    work = os.path.realpath(tempfile.mkdtemp(prefix="ember-sdk-"))
    netns = f"ember-sdk-{os.path.basename(work)[-8:]}"
    data = os.path.join(work, "testdata")
    try:
        os.makedirs(os.path.join(data, "logs"))
        shutil.copy(ember, os.path.join(data, "firecracker"))
        os.symlink(guest["vmlinux"], os.path.join(data, "vmlinux"))
        busybox_init_image(guest["rootfs.ext4"], os.path.join(data, "root-drive.img"))
        for name in ("drive-2.img", "drive-3.img"):
            shutil.copy(SDK_SRC / "testdata" / name, os.path.join(data, name))
        # The SDK's TAP (fc-test-tap0), which Ember creates, lives in a
        # namespace of this test's.
        sh("ip", "netns", "add", netns)
        env = {**SDK_ENV, "FC_TEST_DATA_PATH": data, "DISABLE_ROOT_TESTS": "1",
               "TMPDIR": work}
        run = f"^({'|'.join(TOP)})$/^({'|'.join(SUBTESTS)})$"
        # Within tools/test-emulated's 300 s per test; about 12 s there.
        proc = subprocess.run(["ip", "netns", "exec", netns, str(SDK_TEST), "-test.v",
                               "-test.timeout", "4m", "-test.run", run],
                              cwd=work, env=env, capture_output=True, text=True, timeout=280)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        assert "--- FAIL" not in out, out[-6000:]
        want = TOP + [f"TestMicroVMExecution/{t}" for t in SUBTESTS] + \
            [f"TestMicroVMExecutionWithMmdsV2/{t}" for t in MMDS_V2_SUBTESTS]
        missing = [t for t in want if f"--- PASS: {t} " not in out]
        assert not missing, f"did not pass: {missing}\n{out[-6000:]}"
    finally:
        kill_running(os.path.join(data, "firecracker"))
        sh("ip", "netns", "del", netns, check=False)
        shutil.rmtree(work, ignore_errors=True)
