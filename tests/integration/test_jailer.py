"""ember-jailer: the jail's layout and ownership, dropped privileges, cgroup
membership (v1 and v2), network and PID namespaces, resource limits, bad
arguments, the pid file, what Firecracker's clients (Kata) pass, and a real
guest booted through it. Most tests exec ember_jail_probe (jail_probe.c) in
place of the VMM: it reports what it sees from inside."""

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import EXIT_OK, boot_config

UID = GID = 46123
EXIT_ARG_PARSING = 153


@pytest.fixture
def bins(ember):
    build = Path(ember).parent
    return {"jailer": build / "ember-jailer", "probe": build / "ember_jail_probe", "ember": ember}


class Jail:
    def __init__(self, bins, base, jail_id, exec_file):
        self.bins, self.base, self.id = bins, base, jail_id
        self.exec_name = Path(exec_file).name
        self.exec_file = exec_file
        self.root = base / self.exec_name / jail_id / "root"

    def command(self, *options, vmm_args=(), uid=UID, gid=GID):
        return [str(self.bins["jailer"]), "--id", self.id, "--exec-file", str(self.exec_file),
                "--uid", str(uid), "--gid", str(gid), "--chroot-base-dir", str(self.base),
                *options, "--", *vmm_args]

    def run(self, *options, vmm_args=(), uid=UID, gid=GID, **kw):
        return subprocess.run(self.command(*options, vmm_args=vmm_args, uid=uid, gid=gid),
                              capture_output=True, text=True, timeout=60, **kw)

    def start(self, *options, vmm_args=(), **kw):
        return subprocess.Popen(self.command(*options, vmm_args=vmm_args),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    def pid(self):
        """The VMM's host pid, from <jail root>/<exec name>.pid."""
        return int((self.root / f"{self.exec_name}.pid").read_text())

    def report(self, timeout=30):
        path = self.root / "report.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        raise AssertionError("the probe wrote no report")

    def release(self):
        (self.root / "release").write_text("")


@pytest.fixture
def jail(bins):
    # A short base: the API socket's path in the jail must fit 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="ej-", dir="/tmp"))

    def make(exec_file=None, jail_id=None):
        return Jail(bins, base / "jails", jail_id or f"t-{uuid.uuid4().hex[:8]}",
                    exec_file or bins["probe"])
    yield make
    shutil.rmtree(base, ignore_errors=True)


def test_layout_ownership_and_dropped_privileges(jail, tmp_path):
    j = jail()
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    read_end, write_end = os.pipe()
    try:
        r = j.run(vmm_args=["--host-path", str(secret), "--host-path", "/etc/passwd"],
                  env={"SECRET_TOKEN": "x", "PATH": "/usr/bin"}, pass_fds=(write_end,))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert r.returncode == 0, r.stderr
    rep = j.report()
    assert (rep["uid"], rep["euid"], rep["gid"], rep["egid"], rep["groups"]) == (UID, UID, GID, GID, 0)
    assert rep["environment"] == 0, "the environment is cleared"
    assert rep["fds"] == [0, 1, 2], "inherited fds are closed"
    # As Firecracker's jailer: the id and the start-up times, then the caller's.
    assert rep["argv"][:3] == [j.exec_name, "--id", j.id]
    assert rep["argv"][3:9:2] == ["--start-time-us", "--start-time-cpu-us", "--parent-cpu-time-us"]
    assert all(v.isdigit() for v in rep["argv"][4:10:2]), rep["argv"]
    assert rep["argv"][9:] == ["--host-path", str(secret), "--host-path", "/etc/passwd"]
    # The host's files are out of sight.
    assert rep["host_paths"] == {str(secret): 2, "/etc/passwd": 2}
    assert set(rep["root"]) == {j.exec_name, f"{j.exec_name}.pid", "dev", "run", "report.json"}
    assert j.pid() == rep["pid"], "the VMM is the jailer's own process, exec'd"
    # On the host: the jail's tree, owners and device nodes.
    root_stat = j.root.stat()
    assert (root_stat.st_uid, root_stat.st_gid) == (UID, GID)
    copy = j.root / j.exec_name
    assert copy.read_bytes() == Path(j.exec_file).read_bytes()
    assert copy.stat().st_nlink == 1 and not copy.is_symlink()
    nodes = ["/dev/kvm", "/dev/net/tun", "/dev/urandom"]
    if os.path.exists("/dev/userfaultfd"):
        nodes.append("/dev/userfaultfd")
    for node in nodes:
        inside = os.lstat(j.root / node.lstrip("/"))
        assert stat.S_ISCHR(inside.st_mode), node
        assert inside.st_rdev == os.stat(node).st_rdev, node
        assert (inside.st_uid, inside.st_gid) == (UID, GID), node


@pytest.mark.usefixtures("kvm")
def test_network_and_pid_namespaces(jail):
    j = jail()
    netns = f"ember-jt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "tuntap", "add", "ejt0", "mode", "tap"], check=True)
        # The jailer returns once the VMM runs in its namespace.
        jailer = j.start("--netns", f"/var/run/netns/{netns}", "--new-pid-ns",
                         vmm_args=["--hold"])
        assert jailer.wait(timeout=30) == 0
        rep = j.report()
        pid = int((j.root / f"{j.exec_name}.pid").read_text())
        try:
            assert rep["pid"] == 1, "the VMM is pid 1 of its PID namespace"
            status = Path(f"/proc/{pid}/status").read_text()
            assert [l for l in status.splitlines() if l.startswith("NSpid:")][0].split()[1:] == \
                [str(pid), "1"]
            assert sorted(rep["interfaces"]) == ["ejt0", "lo"]
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/var/run/netns/{netns}").st_ino
        finally:
            j.release()
            wait_gone(pid)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)


def wait_gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.02)


def cgroup_v1_mount(controller):
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mount, fstype, opts = line.split()[:4]
        if fstype == "cgroup" and controller in opts.split(","):
            return Path(mount)
    return None


def cgroup_v2_mount():
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mount, fstype = line.split()[:3]
        if fstype == "cgroup2":
            return Path(mount)
    return None


def remove_cgroup(path):
    for p in (path, path.parent):
        try:
            p.rmdir()
        except OSError:
            pass


def test_cgroup_v1_membership_and_settings(jail):
    if not (cgroup_v1_mount("memory") and cgroup_v1_mount("pids")):
        pytest.skip("this host has no cgroup v1 memory and pids hierarchies")
    j = jail()
    parent = f"ember-test-{uuid.uuid4().hex[:6]}"
    proc = j.start("--cgroup", "memory.limit_in_bytes=268435456", "--cgroup", "pids.max=64",
                   "--cgroup", "cpuset.cpus=0", "--parent-cgroup", parent, vmm_args=["--hold"])
    created = []
    try:
        j.report()
        groups = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
        for controller, file, value in [("memory", "memory.limit_in_bytes", "268435456"),
                                        ("pids", "pids.max", "64"), ("cpuset", "cpuset.cpus", "0")]:
            assert any(l.split(":")[1] == controller and l.split(":")[2] == f"/{parent}/{j.id}"
                       for l in groups), groups
            path = cgroup_v1_mount(controller) / parent / j.id
            created.append(path)
            assert (path / file).read_text().strip() == value
            assert str(proc.pid) in (path / "cgroup.procs").read_text().split()
    finally:
        j.release()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        for path in created:
            remove_cgroup(path)


def test_cgroup_v2_membership_and_settings(jail):
    mount = cgroup_v2_mount()
    if mount is None:
        pytest.skip("this host has no cgroup2 file system")
    j = jail()
    parent = f"ember-test-{uuid.uuid4().hex[:6]}"
    # Core files need no controller; add one when the unified hierarchy has it.
    settings = ["--cgroup", "cgroup.max.descendants=3"]
    if "pids" in (mount / "cgroup.controllers").read_text().split():
        settings += ["--cgroup", "pids.max=64"]
    proc = j.start("--cgroup-version", "2", *settings, "--parent-cgroup", parent,
                   vmm_args=["--hold"])
    path = mount / parent / j.id
    try:
        j.report()
        groups = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
        assert f"0::/{parent}/{j.id}" in groups, groups
        assert (path / "cgroup.max.descendants").read_text().strip() == "3"
        assert (path / "cgroup.procs").read_text().split() == [str(proc.pid)]
    finally:
        j.release()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        remove_cgroup(path)


def test_cgroup_v2_without_the_controller_is_a_clear_error(jail):
    mount = cgroup_v2_mount()
    if mount is None or "memory" in (mount / "cgroup.controllers").read_text().split():
        pytest.skip("needs a cgroup2 hierarchy without the memory controller (a hybrid host)")
    j = jail()
    r = j.run("--cgroup-version", "2", "--cgroup", "memory.max=1000000")
    assert r.returncode == 1
    assert "has no 'memory' controller" in r.stderr and "--cgroup-version 1" in r.stderr


def test_resource_limits_hold(jail):
    j = jail()
    r = j.run("--resource-limit", "no-file=64", "--resource-limit", "fsize=262144")
    assert r.returncode == 0, r.stderr
    rep = j.report()
    assert (rep["nofile"], rep["fsize"]) == (64, 262144)
    # fds 0-2 and the report's own are open: 60 more, then EMFILE.
    assert (rep["opened_until_refused"], rep["open_errno"]) == (60, 24)
    assert (rep["written"], rep["write_errno"]) == (262144, 27)  # then EFBIG


@pytest.mark.parametrize("change,needle", [
    ({"--id": "a/b"}, "--id 'a/b' must be 1-64"),
    ({"--id": "x" * 65}, "--id"),
    ({"--id": None}, "--id is required"),
    ({"--uid": "root"}, "--uid 'root' must be a number"),
    ({"--gid": "-5"}, "--gid '-5' must be a number"),
    ({"--exec-file": "relative/ember"}, "--exec-file 'relative/ember' must name a regular file"),
    ({"--exec-file": "/nonexistent/ember"}, "--exec-file '/nonexistent/ember'"),
    ({"--exec-file": "/tmp"}, "--exec-file '/tmp' must name a regular file"),
    ({"--chroot-base-dir": "jails"}, "--chroot-base-dir 'jails' must be an absolute path"),
    ({"--chroot-base-dir": "/srv/../etc"}, "--chroot-base-dir '/srv/../etc'"),
    ({"--cgroup": "memory"}, "--cgroup 'memory' must be <controller>.<file>=<value>"),
    ({"--cgroup": "=5"}, "--cgroup '=5'"),
    ({"--cgroup": "../../x.y=1"}, "--cgroup '../../x.y=1'"),
    ({"--resource-limit": "cores=1"}, "'cores' is not fsize or no-file"),
    ({"--resource-limit": "fsize=lots"}, "needs a number"),
    ({"--cgroup-version": "3"}, "--cgroup-version '3' must be 1 or 2"),
    ({"--parent-cgroup": "../escape"}, "--parent-cgroup '../escape'"),
    ({"--netns": "netns-name"}, "--netns 'netns-name' must be an absolute path"),
    ({"--bogus": "1"}, "unknown argument '--bogus'"),
])
def test_bad_arguments_are_refused(bins, tmp_path, change, needle):
    base = tmp_path / "jails"
    args = {"--id": "ok-id", "--exec-file": str(bins["probe"]), "--uid": str(UID),
            "--gid": str(GID), "--chroot-base-dir": str(base)}
    args.update(change)
    cmd = [str(bins["jailer"])]
    for k, v in args.items():
        if v is not None:
            cmd += [k, v]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == EXIT_ARG_PARSING, r.stderr
    assert needle in r.stderr, r.stderr
    assert not base.exists(), "nothing is created for a refused command line"


def test_symlinks_and_hard_links_in_the_jail_are_refused(jail, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    j = jail()
    (j.base / j.exec_name).mkdir(parents=True)
    (j.base / j.exec_name / j.id).symlink_to(elsewhere)
    r = j.run()
    assert r.returncode == 1 and "is a symlink" in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == []

    j2 = jail()
    j2.root.mkdir(parents=True)
    (j2.root / j2.exec_name).symlink_to(elsewhere / "target")
    r = j2.run()
    assert r.returncode == 1 and "exists as a symlink" in r.stderr, r.stderr

    j3 = jail()
    j3.root.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("must stay")
    os.link(victim, j3.root / j3.exec_name)
    r = j3.run()
    assert r.returncode == 1 and "hard link" in r.stderr, r.stderr
    assert victim.read_text() == "must stay"


def session_of(pid):
    # /proc/PID/stat: "pid (comm) state ppid pgrp session tty_nr ..."
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[3]), int(fields[4])


def test_daemonize(jail):
    """As Firecracker's jailer (double fork): the jailer exits 0 once the
    VMM's pid is written; the VMM is in a new session it does not lead (so
    it can never get a controlling terminal), its stdio on /dev/null."""
    j = jail()
    r = j.run("--daemonize", vmm_args=["--hold"])
    assert r.returncode == 0, r.stderr
    pid = j.pid()
    rep = j.report()
    try:
        assert rep["pid"] == pid
        assert not rep["sid_is_pid"]
        session, tty = session_of(pid)
        assert session not in (os.getsid(0), pid) and tty == 0
        assert rep["fds"] == [0, 1, 2]
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    finally:
        j.release()
        wait_gone(pid)


def test_root_is_accepted_with_a_warning(jail):
    """Kata starts Firecracker's jailer with --uid 0 --gid 0."""
    j = jail()
    r = j.run(uid=0, gid=0)
    assert r.returncode == 0, r.stderr
    assert "warning: --uid 0 --gid 0: the VMM keeps root's powers" in r.stderr
    rep = j.report()
    assert (rep["uid"], rep["euid"], rep["gid"], rep["egid"], rep["groups"]) == (0, 0, 0, 0, 0)
    assert rep["host_paths"] == {}, "still in its jail"
    assert set(rep["root"]) == {j.exec_name, f"{j.exec_name}.pid", "dev", "run", "report.json"}


def test_help_and_version(bins):
    for flag in ("--help", "-h"):
        r = subprocess.run([str(bins["jailer"]), flag], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "--exec-file PATH" in r.stdout, r
    r = subprocess.run([str(bins["jailer"]), "--version"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ember-jailer v"), r


def test_a_symlinked_exec_file_is_resolved(jail, bins, tmp_path):
    """As Firecracker's jailer (canonicalize): the jail, the copy and the pid
    file are named after the file the link points to."""
    link = tmp_path / "firecracker"
    link.symlink_to(bins["probe"])
    j = jail(exec_file=link)
    r = j.run()
    assert r.returncode == 0, r.stderr
    real = jail(exec_file=bins["probe"], jail_id=j.id)
    rep = real.report()
    assert rep["argv"][0] == bins["probe"].name
    assert real.pid() == rep["pid"]
    assert not j.root.exists()


def test_cgroup_v2_joins_an_existing_parent_without_settings(jail):
    """Firecracker's rule: --cgroup-version 2, no --cgroup, and the parent
    cgroup exists: the VMM goes into the parent."""
    mount = cgroup_v2_mount()
    if mount is None:
        pytest.skip("this host has no cgroup2 file system")
    parent = mount / f"ember-test-{uuid.uuid4().hex[:6]}"
    parent.mkdir()
    j = jail()
    try:
        proc = j.start("--cgroup-version", "2", "--parent-cgroup", parent.name,
                       vmm_args=["--hold"])
        try:
            j.report()
            groups = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
            assert f"0::/{parent.name}" in groups, groups
        finally:
            j.release()
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
        # A parent that does not exist is not made.
        j2 = jail()
        r = j2.run("--cgroup-version", "2", "--parent-cgroup", "ember-test-missing")
        assert r.returncode == 0, r.stderr
        assert not (mount / "ember-test-missing").exists()
    finally:
        parent.rmdir()


def start_jailed_vmm(j, *options, vmm_args=(), uid=UID, gid=GID):
    """Runs the jailer with --daemonize, then waits for the VMM's pid."""
    r = j.run("--daemonize", *options, vmm_args=vmm_args, uid=uid, gid=gid)
    assert r.returncode == 0, r.stderr
    return j.pid()


def api_get(sock, path="/", timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), f"http://localhost{path}"],
                             capture_output=True, text=True, timeout=30).stdout
        if out:
            return json.loads(out)
        time.sleep(0.05)
    raise AssertionError(f"nothing answers at {sock}")


@pytest.mark.parametrize("name,socket", [("firecracker", "firecracker.socket"),
                                         ("ember", "ember.socket")])
def test_kata_command_line_and_the_default_socket(jail, bins, tmp_path, name, socket):
    """Kata's jailer command line (--uid 0 --gid 0 --daemonize, no
    --api-sock) with a copy of ember installed as `name`: the API answers at
    that name's default socket in the jail, and <name>.pid has the VMM's
    pid. No guest boots: the VMM waits for the API."""
    exec_file = tmp_path / name
    shutil.copy(bins["ember"], exec_file)
    j = jail(exec_file=exec_file)
    pid = start_jailed_vmm(j, uid=0, gid=0)
    try:
        info = api_get(j.root / "run" / socket)
        assert info["id"] == j.id and info["state"] == "Not started", info
        assert os.readlink(f"/proc/{pid}/exe") == f"/{name}", "the pid is the VMM's"
        assert sorted(p.name for p in (j.root / "run").iterdir()) == [socket]
    finally:
        os.kill(pid, 15)
        wait_gone(pid)


def test_a_guest_boots_through_the_jailer(jail, bins, guest):
    j = jail(exec_file=bins["ember"])
    j.root.mkdir(parents=True)
    for name in ("vmlinux", "initramfs.cpio"):
        shutil.copy(guest[name], j.root / name)
    (j.root / "vm.json").write_text(json.dumps(boot_config("/vmlinux", "/initramfs.cpio")))
    proc = j.start(vmm_args=["--config-file", "/vm.json", "--api-sock", "/run/ember.socket"])
    sock = j.root / "run" / "ember.socket"
    try:
        deadline = time.monotonic() + 30
        out = ""
        while not out and time.monotonic() < deadline and proc.poll() is None:
            out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://localhost/"],
                                 capture_output=True, text=True, timeout=30).stdout
            time.sleep(0.05)
        assert out, proc.communicate(timeout=60)[1]
        assert json.loads(out)["id"] == j.id, out
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{UID}\t{UID}\t{UID}\t{UID}" in status
        assert "Seccomp:\t2" in status
        console, log = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_OK, log
    assert "Run /init as init process" in console, log
