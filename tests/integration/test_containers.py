"""Containers in microVMs through containerd (issue 18): Debian's containerd,
started by the test with its own config, root, state and socket under a
temp dir, runs an OCI image the test builds from Debian's busybox-static
(an OCI image layout tarball, no registry) with `ctr`, through
containerd-shim-runc-v2 driving either runc (the baseline) or ember-oci
(each container's process in its own Ember microVM). The same checks run
on both and must give the same outputs and exit statuses:

- `ctr run` prints the container's output, stdin reaches it, and its exit
  status comes back (non-zero here; zero below);
- `ctr run -d`, then `ctr task exec` runs more processes in the same
  container (statuses 0 and 5), then `ctr task kill` stops it with SIGTERM
  and `ctr task rm` reports 143;
- `ctr run -t` answers on its terminal;
- afterwards nothing of the container remains: no process, mount, socket
  or file.

Ember's containers restore a template snapshot made by one boot; one more
container boots cold (each boot takes tens of seconds to minutes on PVM
hosts). bench/containers_bench.py times them beside runc.
"""

import contextlib
import gzip
import hashlib
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, is_pvm_host, need_kvm
from test_net import new_netns, sh

BUSYBOX = Path("/bin/busybox")
IMAGE = "docker.io/library/ember-busybox:test"
# A guest boot on a loaded PVM host can take minutes; runc takes a second.
EMBER_TIMEOUT = 900
APPLETS = ["sh", "echo", "cat", "sleep", "ls", "id", "hostname", "env", "true", "false", "tty",
           "stty", "ps", "mount", "ip", "ping", "nc"]


def _blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_image(path):
    """An OCI image layout tarball at `path`: one layer with busybox and its
    applets' links in /bin, /tmp and /etc/passwd."""
    layout = Path(tempfile.mkdtemp())
    (layout / "blobs" / "sha256").mkdir(parents=True)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        def add_dir(name, mode=0o755):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        for d in ("bin", "etc", "proc", "sys", "dev", "root"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        tar.add(str(BUSYBOX), "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    layer_desc = _blob(layout, gzip.compress(layer.getvalue(), mtime=0))
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_desc = _blob(layout, json.dumps(config).encode())
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(layout, json.dumps(manifest).encode())
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest_desc["annotations"] = {"io.containerd.image.name": IMAGE,
                                    "org.opencontainers.image.ref.name": "test"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                   "manifests": [manifest_desc]}))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(path, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(str(entry), entry.name)
    shutil.rmtree(layout)


class Containerd:
    """containerd with everything under `base`; ctr() runs ctr against it."""

    def __init__(self, base):
        self.base = Path(base)
        self.sock = self.base / "c.sock"
        config = self.base / "config.toml"
        config.write_text(f'''version = 2
root = "{self.base}/root"
state = "{self.base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
''')
        self.log = open(self.base / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "-c", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_text()
            time.sleep(0.2)

    def log_text(self):
        return (self.base / "containerd.log").read_text(errors="replace")[-4000:]

    def ctr(self, *args, check=True, timeout=120, **kw):
        proc = subprocess.run(["ctr", "-a", str(self.sock), *args], capture_output=True,
                              timeout=timeout, **kw)
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr, self.log_text())
        return proc

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def containerd_unavailable():
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian's containerd and runc packages)"
    if os.geteuid() != 0:
        return "containerd needs root"
    return None


@contextlib.contextmanager
def running_containerd():
    """containerd under a fresh temp dir with the busybox image imported;
    stops it and removes everything of it afterwards (shims or VMMs a
    failed run left included)."""
    # Short: the state directories hold Unix sockets (108-byte paths).
    base = Path(tempfile.mkdtemp(prefix="ectr-", dir="/tmp"))
    daemon = Containerd(base)
    try:
        build_image(base / "image.tar")
        daemon.ctr("images", "import", "--snapshotter", "native", str(base / "image.tar"))
        yield daemon
    finally:
        daemon.stop()
        for pid in processes_under(base):  # ours alone
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-R", "-l", str(base / "state")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def remove_container(daemon, cid):
    """Kills container `cid`'s task and removes both."""
    daemon.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    deadline = time.monotonic() + 60
    while "RUNNING" in daemon.ctr("task", "ls").stdout.decode() and time.monotonic() < deadline:
        time.sleep(0.2)
    daemon.ctr("task", "rm", "-f", cid, check=False)
    daemon.ctr("container", "rm", cid, check=False)


def make_template(daemon):
    """ember-oci's template snapshot for containerd's "default" namespace;
    the seconds it took."""
    for need in (ROOT / "build" / "ember-oci", ROOT / "build" / "ember",
                 ROOT / "build" / "guest" / "vmlinux", ROOT / "build" / "guest" / "rootfs.ext4"):
        assert need.exists(), f"{need} is missing: build it (tools/devtool setup)"
    root = daemon.base / "ember-state" / "default"
    start = time.monotonic()
    made = subprocess.run([str(ROOT / "build" / "ember-oci"), "--root", str(root), "template"],
                          capture_output=True, text=True, timeout=EMBER_TIMEOUT)
    assert made.returncode == 0, made.stderr
    return time.monotonic() - start


@pytest.fixture(scope="module")
def containerd():
    why = containerd_unavailable()
    if why:
        pytest.skip(why)
    with running_containerd() as daemon:
        yield daemon


def processes_under(path):
    """Pids whose command line names `path` (the shims, monitors, VMMs of
    this containerd)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(int(entry.name))
    return found


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


class Runtime:
    """How `ctr run` reaches one runtime: runc or ember-oci, each with its
    own state root."""

    def __init__(self, name, daemon):
        self.name = name
        self.daemon = daemon
        self.root = daemon.base / f"{name}-state"
        self.binary = shutil.which("runc") if name == "runc" else \
            str(ROOT / "build" / "ember-oci")
        self.timeout = 120 if name == "runc" else EMBER_TIMEOUT

    def run_args(self):
        return ["--snapshotter", "native", "--runc-binary", self.binary,
                "--runc-root", str(self.root)]

    def check_clean(self, cid):
        """Nothing of container `cid` remains (the shim takes a moment to
        exit after its task is deleted)."""
        deadline = time.monotonic() + 60
        while True:
            left = [p for p in processes_under(self.daemon.base) if p != self.daemon.proc.pid]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
        assert not mounts_under(self.daemon.base / "state"), mounts_under(self.daemon.base)
        leftover = list(self.root.rglob("*")) if self.root.exists() else []
        assert not [p for p in leftover if cid in str(p)], leftover
        tasks = self.daemon.ctr("tasks", "ls", "-q").stdout.decode().split()
        assert cid not in tasks


RUNTIMES = ["runc", "ember"]


@pytest.fixture(scope="module")
def ember_template(containerd):
    """One boot, after which every Ember container starts by restoring it."""
    need_kvm()
    print(f"ember: template snapshot made in {make_template(containerd):.1f} s")


@pytest.fixture(params=RUNTIMES)
def runtime(request, containerd):
    if request.param == "ember":
        request.getfixturevalue("ember_template")
    return Runtime(request.param, containerd)


def process_tree(pid):
    """`pid` and its descendants."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def test_run_prints_output_takes_stdin_and_returns_the_status(runtime):
    d = runtime.daemon
    cid = f"{runtime.name}-run"
    start = time.monotonic()
    proc = subprocess.Popen(
        ["ctr", "-a", str(d.sock), "run", "--rm", *runtime.run_args(), IMAGE, cid,
         "sh", "-c",
         "echo hello; read line; echo \"got $line\"; hostname; id -u; echo \"t=$GLIBC_TUNABLES\"; exit 3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    first_line_s = time.monotonic() - start
    proc.stdin.write(b"world\n")
    proc.stdin.close()
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=runtime.timeout)
    print(f"{runtime.name}: ctr run to the first output line {first_line_s:.2f} s")
    assert first == b"hello\n", (first, err, d.log_text())
    lines = rest.decode().splitlines()
    assert lines[0] == "got world" and lines[2] == "0", (lines, err)
    # Ember's agent gives the process the guest kernel's GLIBC_TUNABLES
    # (PVM hosts only: docs/pvm-guest.md); runc's has the spec's alone.
    assert ("-AVX2" in lines[3]) == (runtime.name != "runc" and is_pvm_host()), lines
    assert proc.returncode == 3, (proc.returncode, err)
    runtime.check_clean(cid)


# containerd's default spec: Docker's capabilities (CAP_CHOWN, ...,
# CAP_AUDIT_WRITE) in the bounding, permitted and effective sets, and no
# new privileges.
DEFAULT_CAPS = {"CapInh": "0000000000000000", "CapPrm": "00000000a80425fb",
                "CapEff": "00000000a80425fb", "CapBnd": "00000000a80425fb",
                "CapAmb": "0000000000000000", "NoNewPrivs": "1"}


def test_process_capabilities_and_no_new_privileges(runtime):
    """process.capabilities and noNewPrivileges as runc applies them: the
    same sets in /proc/self/status, and a capability left out is denied
    (mount needs CAP_SYS_ADMIN)."""
    d = runtime.daemon
    cid = f"{runtime.name}-caps"
    ran = d.ctr("run", "--rm", *runtime.run_args(), IMAGE, cid, "sh", "-c",
                "echo nofile $(ulimit -n); cat /proc/self/status; "
                "mount -t tmpfs none /tmp && echo mounted",
                check=False, timeout=runtime.timeout)
    status = dict(line.split(":\t", 1) for line in ran.stdout.decode().splitlines()
                  if ":\t" in line)
    assert {k: status.get(k, "").strip() for k in DEFAULT_CAPS} == DEFAULT_CAPS, ran.stdout
    # containerd's default process.rlimits: RLIMIT_NOFILE 1024.
    assert ran.stdout.startswith(b"nofile 1024\n"), ran.stdout
    assert b"mounted" not in ran.stdout and ran.returncode != 0, ran.stdout
    runtime.check_clean(cid)


def test_mounts_a_bind_read_only_and_a_tmpfs(runtime, tmp_path):
    """config.json's mounts as ctr --mount writes them: a host directory
    bound read-only (Ember copies it into the container's image and binds
    it read-only in the guest), one bound read-write and a tmpfs, under a
    root that is read-only itself (ctr run --read-only: root.readonly, the
    mounts keep their own flags); the same output as runc's."""
    d = runtime.daemon
    cid = f"{runtime.name}-mounts"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    writable = tmp_path / "writable"
    writable.mkdir()
    ran = d.ctr("run", "--rm", "--read-only", *runtime.run_args(),
                "--mount", f"type=bind,src={shared},dst=/data,options=rbind:ro",
                "--mount", f"type=bind,src={writable},dst=/rw,options=rbind:rw",
                "--mount", "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m",
                IMAGE, cid, "sh", "-c",
                "cat /data/hello; stat -f -c %T /scratch; echo x > /scratch/ok && echo wrote; "
                "echo x > /data/new 2>/dev/null || echo read-only; "
                "echo x > /new 2>/dev/null || echo root-read-only; "
                "echo x > /rw/new && echo rw-writable",
                check=False, timeout=runtime.timeout)
    assert (ran.returncode, ran.stdout.decode()) == (
        0, "from the host\ntmpfs\nwrote\nread-only\nroot-read-only\nrw-writable\n"), ran.stderr
    runtime.check_clean(cid)


def atomic_write(volume, version, keys):
    """What kubelet's atomic writer does for a new version of a volume: the
    keys in a new timestamped directory, `..data` switched to it by a
    rename, a link for each new key, links of keys gone removed, then the
    old directory."""
    data = volume / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    (volume / version).mkdir()
    for key, value in keys.items():
        (volume / version / key).write_text(value)
    os.symlink(version, volume / "..data_tmp")
    os.replace(volume / "..data_tmp", data)
    for key in keys:
        if not (volume / key).is_symlink():
            os.symlink(f"..data/{key}", volume / key)
    for entry in volume.iterdir():
        if entry.is_symlink() and not entry.exists():
            entry.unlink()
    if old:
        shutil.rmtree(volume / old)


def read_line(stream, timeout):
    """One line of a process's output, waiting at most `timeout` seconds."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], max(0, deadline - time.monotonic()))
        assert ready, f"no whole line in {timeout} s: {line!r}"
        byte = os.read(stream.fileno(), 1)
        assert byte, f"end of output after {line!r}"
        line += byte
    return line


def test_a_read_only_volume_follows_its_source(runtime, tmp_path):
    """A directory bound read-only and laid out as kubelet lays out a
    configMap's volume gets a new version while the container runs: the
    container sees the new value, the removed key gone, and its mount still
    read-only. runc binds the host's directory itself; Ember's guest has a
    copy that ember-oci keeps up to date."""
    d = runtime.daemon
    cid = f"{runtime.name}-volume"
    volume = tmp_path / "volume"
    volume.mkdir()
    atomic_write(volume, "..2026_12_04_00_00_00.1", {"key": "one", "old": "gone soon"})
    # Until the whole new version is there: a writer's steps (and the
    # guest's copy of them) come one after the other.
    script = ("cat /config/key; echo; "
              "while [ \"$(echo $(ls -a /config))\" != "
              "'. .. ..2026_12_04_00_01_00.2 ..data key' ]; do sleep 0.2; done; "
              "cat /config/key; echo; echo x > /config/new 2>/dev/null || echo read-only")
    run = subprocess.Popen(["ctr", "-a", str(d.sock), "run", "--rm", *runtime.run_args(),
                            "--mount", f"type=bind,src={volume},dst=/config,options=rbind:ro",
                            IMAGE, cid, "sh", "-c", script],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(run.stdout, runtime.timeout) == b"one\n"
        atomic_write(volume, "..2026_12_04_00_01_00.2", {"key": "two"})
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        d.ctr("task", "rm", "-f", cid, check=False)
        d.ctr("container", "rm", cid, check=False)
    assert (run.returncode, out.decode()) == (0, "two\nread-only\n"), err
    runtime.check_clean(cid)


def test_the_container_ends_with_its_process(runtime):
    """As runc's pid namespace: when the container's process exits, what it
    left running in the background is killed, and ctr run returns its
    status at once rather than when the background process lets go of the
    output."""
    d = runtime.daemon
    cid = f"{runtime.name}-init-exit"
    # Held by the sleep, ctr run would outlast the timeout.
    ran = d.ctr("run", "--rm", *runtime.run_args(), IMAGE, cid, "sh", "-c",
                "sleep 3000 & echo started; exit 3", check=False, timeout=runtime.timeout)
    assert (ran.returncode, ran.stdout) == (3, b"started\n"), ran.stderr
    runtime.check_clean(cid)


@contextlib.contextmanager
def cni_like_namespaces(tag):
    """What a CNI bridge plugin leaves, without touching the host's network:
    a namespace for the container whose eth0 (one end of a veth pair) has
    10.77.0.2/24 and a default route via 10.77.0.1, and a second namespace,
    the wire's far side, holding the other end at 10.77.0.1."""
    made = []
    try:
        pod = new_netns(f"ember-pod-{tag}")
        made.append(pod)
        wire = new_netns(f"ember-wire-{tag}")
        made.append(wire)
        sh("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
           "netns", wire)
        sh("ip", "-n", pod, "addr", "add", "10.77.0.2/24", "dev", "eth0")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pod, "route", "add", "default", "via", "10.77.0.1")
        sh("ip", "-n", wire, "addr", "add", "10.77.0.1/24", "dev", "peer0")
        sh("ip", "-n", wire, "link", "set", "peer0", "up")
        yield pod, wire
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


# Answers one connection on argv[2]:7777 ("listening" once it does; the
# address may come later, as a CNI plugin's bridge does): prints the peer
# and the line it got, sends "pong".
ONE_TCP_ANSWER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
s.bind((sys.argv[2], 7777))
s.listen(1)
print("listening", flush=True)
s.settimeout(float(sys.argv[1]))
c, peer = s.accept()
print(peer[0], c.recv(100).decode().strip(), flush=True)
c.sendall(b"pong\\n")
c.close()
"""


def test_the_network_of_the_containers_namespace(runtime):
    """In a network namespace set up as a CNI plugin sets up a pod's (ctr
    run --with-ns, as CRI joins one), the container has the namespace's
    address and reaches the far side of its veth by ICMP and TCP. In Ember
    the guest's interface takes the veth's MAC, MTU, address and routes,
    and tc redirects the veth's traffic to and from the VM's TAP."""
    d = runtime.daemon
    cid = f"{runtime.name}-net"
    with cni_like_namespaces(runtime.name) as (pod, wire):
        server = subprocess.Popen(
            ["ip", "netns", "exec", wire, "python3", "-c", ONE_TCP_ANSWER,
             str(runtime.timeout), "10.77.0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.stdout.readline() == b"listening\n", server.stderr.read()
            ran = d.ctr("run", "--rm", *runtime.run_args(), "--with-ns",
                        f"network:/var/run/netns/{pod}", IMAGE, cid, "sh", "-c",
                        "ip -4 -o addr show eth0; ping -c 1 -W 30 10.77.0.1 >/dev/null && "
                        "echo pinged; echo ping | nc 10.77.0.1 7777",
                        check=False, timeout=runtime.timeout)
        finally:
            server.kill()
            answered = server.communicate()
        out = ran.stdout.decode()
        assert ran.returncode == 0, (out, ran.stderr)
        assert " 10.77.0.2/24 " in out.splitlines()[0], out
        assert out.splitlines()[1:] == ["pinged", "pong"], out
        assert answered[0].decode() == "10.77.0.2 ping\n", answered
        if runtime.name == "ember":
            # The TAP went with the container; the pod's namespace stays.
            links = subprocess.run(["ip", "-n", pod, "-o", "link"], capture_output=True,
                                   check=True).stdout.decode()
            names = re.findall(r"^\d+: ([^:@]+)", links, re.M)
            assert names and not [n for n in names if "ember" in n], links
    runtime.check_clean(cid)


CNI_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


@contextlib.contextmanager
def cni_bridge_host(tag, tmp_path):
    """Debian's CNI plugins as `ctr run --cni` runs them (bridge, host-local
    IPAM: 10.79.0.0/24, the bridge at .1 as the gateway), without touching
    the host: ctr runs in a network namespace of the test's, where the
    plugin makes its bridge, and in a mount namespace where overlays on
    /etc and /opt give it the configuration and plugins it looks for
    there (and /var/lib, where libcni caches results). Yields the command
    prefix that runs a program that way, and the host namespace's name."""
    if not (CNI_PLUGINS / "bridge").exists():
        pytest.skip("no CNI plugins (Debian's containernetworking-plugins)")
    # libcni also caches results under /var/lib/cni.
    etc, opt, var = tmp_path / "etc", tmp_path / "opt", tmp_path / "var"
    (etc / "upper" / "cni" / "net.d").mkdir(parents=True)
    (opt / "upper" / "cni").mkdir(parents=True)
    (opt / "upper" / "cni" / "bin").symlink_to(CNI_PLUGINS)
    (var / "upper").mkdir(parents=True)
    for d in (etc, opt, var):
        (d / "work").mkdir()
    conf = {"cniVersion": "1.0.0", "name": f"ember-{tag}",
            "plugins": [{"type": "bridge", "bridge": "cni-ember", "isGateway": True,
                         "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                                  "ranges": [[{"subnet": "10.79.0.0/24"}]],
                                  "routes": [{"dst": "0.0.0.0/0"}]}}]}
    (etc / "upper" / "cni" / "net.d" / "10-ember.conflist").write_text(json.dumps(conf))
    overlays = " && ".join(
        f"mount -t overlay overlay -o lowerdir=/{name},upperdir={d}/upper,workdir={d}/work /{name}"
        for name, d in (("etc", etc), ("opt", opt), ("var/lib", var)))
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", overlays],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot overlay /etc, /opt and /var/lib here: {probe.stderr.decode()}")
    host = new_netns(f"ember-cni-{tag}")
    try:
        yield ["ip", "netns", "exec", host, "unshare", "-m", "--propagation", "private",
               "sh", "-c", overlays + ' && exec "$0" "$@"'], host
    finally:
        sh("ip", "netns", "del", host, check=False)


def test_a_cni_bridge_network(runtime, tmp_path):
    """`ctr run --cni` with Debian's bridge plugin: containerd's client sets
    the network up in the container's namespace after create (as CRI does
    for a pod's), and the container has the address the plugin gave it and
    reaches the bridge by ICMP and TCP. In Ember the guest takes the veth's
    settings at start."""
    d = runtime.daemon
    cid = f"{runtime.name}-cni"
    with cni_bridge_host(runtime.name, tmp_path) as (prefix, host):
        server = subprocess.Popen(
            ["ip", "netns", "exec", host, "python3", "-c", ONE_TCP_ANSWER,
             str(runtime.timeout), "10.79.0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.stdout.readline() == b"listening\n", server.stderr.read()
            ran = subprocess.Popen(
                prefix + ["ctr", "-a", str(d.sock), "run", "--rm", "--cni",
                          *runtime.run_args(), IMAGE, cid, "sh", "-c",
                          "ip -4 -o addr show eth0; ping -c 1 -W 30 10.79.0.1 >/dev/null && "
                          "echo pinged; echo ping | nc 10.79.0.1 7777"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = ran.communicate(timeout=runtime.timeout)
        finally:
            server.kill()
            answered = server.communicate()
            if ran.poll() is None:
                ran.kill()
                d.ctr("task", "rm", "-f", cid, check=False)
                d.ctr("container", "rm", cid, check=False)
        out = out.decode()
        assert ran.returncode == 0, (out, err, answered)
        assert re.search(r" 10\.79\.0\.\d+/24 ", out.splitlines()[0]), out
        assert out.splitlines()[1:] == ["pinged", "pong"], (out, answered)
        address = out.split()[3].split("/")[0]
        assert answered[0].decode() == f"{address} ping\n", answered
    runtime.check_clean(cid)


def memory_cgroup(pid):
    """The v1 memory cgroup of `pid`, or the v2 cgroup: its path."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") or controllers == "":
            return path
    return None


def test_the_container_has_its_cgroup_and_limits(runtime):
    """linux.cgroupsPath and the memory limit as runc applies them: the
    task's processes (Ember: the monitor and the VMM) are in
    /default/<id> with the limit, ctr task metrics reads that cgroup, and
    it is gone after delete."""
    d = runtime.daemon
    cid = f"{runtime.name}-cgroup"
    limit = 512 << 20
    d.ctr("run", "-d", "--memory-limit", str(limit), *runtime.run_args(), IMAGE, cid,
          "sleep", "100000", timeout=runtime.timeout)
    v1 = Path("/sys/fs/cgroup/memory").is_dir()
    base = Path("/sys/fs/cgroup/memory" if v1 else "/sys/fs/cgroup")
    try:
        found = re.search(rf"^{cid}\s+(\d+)\s+RUNNING", d.ctr("task", "ls").stdout.decode(), re.M)
        assert found
        tree = process_tree(int(found.group(1)))
        paths = {memory_cgroup(p) for p in tree}
        assert paths == {f"/default/{cid}"}, (tree, paths)
        limit_file = base / "default" / cid / ("memory.limit_in_bytes" if v1 else "memory.max")
        assert int(limit_file.read_text()) == limit
        metrics = d.ctr("task", "metrics", cid).stdout.decode()
        usage = re.search(r"^memory\.usage_in_bytes\s+(\d+)", metrics, re.M) if v1 else \
            re.search(r"^memory\.usage\s+(\d+)", metrics, re.M)
        assert usage and int(usage.group(1)) > 0, metrics
        # update as go-runc sends it for CRI's UpdateContainerResources (this
        # ctr has no task update): the shim's root is <runc-root>/<namespace>.
        subprocess.run([runtime.binary, "--root", str(runtime.root / "default"), "update",
                        "--resources", "-", cid], check=True, timeout=runtime.timeout,
                       input=json.dumps({"memory": {"limit": limit * 2}}).encode())
        assert int(limit_file.read_text()) == limit * 2
    finally:
        remove_container(d, cid)
    runtime.check_clean(cid)
    assert not (base / "default" / cid).exists()


def test_hooks_run_at_their_moments(runtime, tmp_path):
    """config.json's host-side hooks, given through ctr run --config: each
    gets the container's state on stdin, createRuntime before the process,
    poststart after it started, poststop after delete. createRuntime runs
    in the runtime's network namespace (a CNI plugin's veth end must stay
    there), createContainer in the container's."""
    d = runtime.daemon
    cid = f"{runtime.name}-hooks"
    rootfs = tmp_path / "rootfs"
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (rootfs / sub).mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    spec = json.loads(subprocess.run(["ctr", "oci", "spec"], capture_output=True,
                                     check=True).stdout)
    spec["root"] = {"path": str(rootfs)}
    spec["process"]["args"] = ["sh", "-c", "echo in-container"]
    spec["process"]["env"] = ["PATH=/bin"]
    spec["linux"]["cgroupsPath"] = f"/default/{cid}"
    log = tmp_path / "hooks.log"
    spec["hooks"] = {name: [{"path": "/bin/sh", "args": [
        "sh", "-c",
        f"read -r state; echo \"{name} $(readlink /proc/self/ns/net) $state\" >> {log}"],
        "timeout": 60}]
        for name in ("createRuntime", "createContainer", "poststart", "poststop")}
    # process.oomScoreAdj: runc's init, Ember's monitor (and the VMM) take it.
    spec["process"]["oomScoreAdj"] = 123
    oom = tmp_path / "oom"
    spec["hooks"]["poststart"].append({"path": "/bin/sh", "args": [
        "sh", "-c", "read -r state; "
        "pid=$(echo \"$state\" | sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); "
        f"cat /proc/$pid/oom_score_adj > {oom}"], "timeout": 60})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(spec))
    ran = d.ctr("run", "--rm", *runtime.run_args(), "--config", str(config), cid,
                check=False, timeout=runtime.timeout)
    assert (ran.returncode, ran.stdout) == (0, b"in-container\n"), ran.stderr
    lines = [line.split(" ", 2) for line in log.read_text().splitlines()]
    assert [name for name, _, _ in lines] == [
        "createRuntime", "createContainer", "poststart", "poststop"], lines
    for _, _, state in lines:
        assert json.loads(state)["id"] == cid, state
    assert oom.read_text() == "123\n"
    netns = {name: ns for name, ns, _ in lines}
    assert netns["createRuntime"] == os.readlink("/proc/self/ns/net"), netns
    assert netns["createContainer"] != netns["createRuntime"], netns
    runtime.check_clean(cid)


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_pods_sandbox(name, containerd):
    """A Kubernetes pod's sandbox (its pause container, annotated so by CRI):
    runc runs its process; Ember runs no microVM for a process that only
    waits, its monitor stands where pause would (so this runs without
    KVM). Either way the task runs, pauses and resumes, ends with 0 on
    SIGTERM as pause does, and leaves nothing behind."""
    runtime = Runtime(name, containerd)
    d = containerd
    cid = f"{name}-sandbox"
    d.ctr("run", "-d", "--annotation", "io.kubernetes.cri.container-type=sandbox",
          "--annotation", f"io.kubernetes.cri.sandbox-id={cid}", *runtime.run_args(), IMAGE, cid, "sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait",
          timeout=runtime.timeout)
    try:
        found = re.search(rf"^{cid}\s+(\d+)\s+RUNNING", d.ctr("task", "ls").stdout.decode(), re.M)
        assert found
        if name == "ember":
            tree = process_tree(int(found.group(1)))
            assert len(tree) == 1, [Path(f"/proc/{p}/cmdline").read_bytes() for p in tree]
        d.ctr("task", "pause", cid)
        assert re.search(rf"^{cid}\s+\d+\s+PAUSED", d.ctr("task", "ls").stdout.decode(), re.M)
        d.ctr("task", "resume", cid)
        if name == "runc":
            time.sleep(0.5)  # the shell's trap is set
        d.ctr("task", "kill", cid)
        deadline = time.monotonic() + 60
        while "STOPPED" not in d.ctr("task", "ls").stdout.decode():
            assert time.monotonic() < deadline, d.ctr("task", "ls").stdout
            time.sleep(0.2)
        removed = d.ctr("task", "rm", cid)
        assert b"non-zero exit code" not in removed.stderr, removed.stderr
    finally:
        d.ctr("task", "rm", "-f", cid, check=False)
        d.ctr("container", "rm", cid, check=False)
    runtime.check_clean(cid)


def test_detached_container_exec_and_sigterm(runtime):
    d = runtime.daemon
    cid = f"{runtime.name}-detached"
    # One long sleep, waited for (the trap runs at once): no exec every
    # second beside the execs under test (each costs about a second of the
    # emulated guest of a PVM host). The file appears whole (a rename): an
    # exec between the shell's open and its write would read it empty.
    script = ("trap 'echo term; exit 143' TERM; echo up > /tmp/up.new; mv /tmp/up.new /tmp/up; "
              "sleep 100000 & wait")
    d.ctr("run", "-d", *runtime.run_args(), IMAGE, cid, "sh", "-c", script,
          timeout=runtime.timeout)
    try:
        # The first exec waits for the process (and, with Ember, the guest).
        deadline = time.monotonic() + runtime.timeout
        while True:
            ran = d.ctr("task", "exec", "--exec-id", "probe", cid, "cat", "/tmp/up", check=False,
                        timeout=runtime.timeout)
            if ran.returncode == 0:
                break
            assert time.monotonic() < deadline, (ran.stdout, ran.stderr)
            time.sleep(2)
        assert ran.stdout == b"up\n"
        ran = d.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo exec; exit 5",
                    check=False, timeout=runtime.timeout)
        assert (ran.returncode, ran.stdout) == (5, b"exec\n"), ran.stderr
        # pause and resume (runc's freezer; Ember pauses the microVM).
        d.ctr("task", "pause", cid, timeout=runtime.timeout)
        assert re.search(rf"^{cid}\s+\d+\s+PAUSED", d.ctr("task", "ls").stdout.decode(), re.M)
        d.ctr("task", "resume", cid, timeout=runtime.timeout)
        ran = d.ctr("task", "exec", "--exec-id", "e2", cid, "cat", "/tmp/up",
                    timeout=runtime.timeout)
        assert ran.stdout == b"up\n", ran.stderr
        tasks = d.ctr("task", "ls").stdout.decode()
        found = re.search(rf"^{cid}\s+(\d+)\s+RUNNING", tasks, re.M)
        assert found, tasks
        # What the container costs the host: the task's process and all it
        # started (runc: the container's processes; Ember: the monitor and
        # the VMM with the guest's memory).
        tree = process_tree(int(found.group(1)))
        print(f"{runtime.name}: PSS of a running container {pss_kib(tree)} KiB "
              f"({len(tree)} processes)")
        # A detached exec is one of the task's processes (runc: in the
        # container's cgroup; Ember: the monitor that lives as long as it
        # does), and kill --all signals it too.
        d.ctr("task", "exec", "-d", "--exec-id", "sleeper", cid, "sleep", "1000",
              timeout=runtime.timeout)
        ps = d.ctr("task", "ps", cid).stdout.decode()
        pids = [int(line.split()[0]) for line in ps.splitlines()[1:] if line.strip()]
        assert int(found.group(1)) in pids and len(pids) >= 2, ps
        d.ctr("task", "kill", "--all", "-s", "SIGTERM", cid)
        deadline = time.monotonic() + runtime.timeout
        while "STOPPED" not in d.ctr("task", "ls").stdout.decode():
            assert time.monotonic() < deadline, d.ctr("task", "ls").stdout
            time.sleep(0.5)
        # ctr task rm reports a non-zero status as a warning.
        removed = d.ctr("task", "rm", cid)
        assert b"exit with non-zero exit code 143" in removed.stderr, removed.stderr
    finally:
        d.ctr("task", "rm", "-f", cid, check=False)
        d.ctr("container", "rm", cid, check=False)
    runtime.check_clean(cid)


def test_run_with_a_terminal(runtime):
    d = runtime.daemon
    cid = f"{runtime.name}-tty"
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("ctr", ["ctr", "-a", str(d.sock), "run", "-t", "--rm", *runtime.run_args(),
                          IMAGE, cid, "sh", "-c",
                          "tty >/dev/null && echo on-a-tty; read x; echo \"answer $x\""])
    out = b""
    deadline = time.monotonic() + runtime.timeout

    def read_until(text):
        """Reads until `text` (bytes, or a compiled pattern) is in out."""
        nonlocal out
        seen = text.search if isinstance(text, re.Pattern) else lambda b: text in b
        while not seen(out):
            assert time.monotonic() < deadline, out
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        return bool(seen(out))

    try:
        # The whole line: the echo of what is typed next must come after it.
        assert read_until(re.compile(rb"on-a-tty\r+\n")), out
        os.write(fd, b"42\r")
        assert read_until(b"answer 42"), out
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, out
        # The guest's terminal echoes the input as runc's does.
        assert re.search(rb"\n42\r+\n", out), out
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
        d.ctr("task", "rm", "-f", cid, check=False)
        d.ctr("container", "rm", cid, check=False)
    runtime.check_clean(cid)


def first_line(daemon, runtime, cid, extra=()):
    """`ctr run --rm IMAGE cid echo first` with `runtime`: the seconds to
    its first output line; checks the line and the exit status."""
    start = time.monotonic()
    proc = subprocess.Popen(
        ["ctr", "-a", str(daemon.sock), "run", "--rm", *runtime.run_args(), *extra,
         IMAGE, cid, "echo", "first"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    seconds = time.monotonic() - start
    proc.wait(timeout=runtime.timeout)
    assert (first, proc.returncode) == (b"first\n", 0), (cid, proc.stderr.read())
    runtime.check_clean(cid)
    return seconds


def test_cold_boot_stays_available(containerd, ember_template):
    """With a template there, the annotation io.ember.boot=cold still boots
    the container's microVM from the kernel (bench/containers_bench.py
    times it beside the template and runc)."""
    runtime = Runtime("ember", containerd)
    first_line(containerd, runtime, "ember-cold", ["--annotation", "io.ember.boot=cold"])
