"""MMDS with a real Linux guest: busybox wget and nc in the guest talk to
169.254.169.254 through virtio-net, and Ember answers from the data store
the host fills (--metadata at start, PUT and PATCH /mmds later). One guest
for everything: V2 tokens, the plain-text listing and a leaf, JSON on
request, a PATCH seen at once, the size limit (413, store unchanged), an
interface not in network_interfaces that does not reach MMDS, and the TAP
still reached beside it. The guest's round trip and the VMM thread's CPU
time per request are measured and printed. A second guest runs V1 with
imds_compat (and an interface with an mtu) and is snapshotted: the restored one keeps the MMDS
configuration but not the data or the tokens, as in Firecracker."""

import json

from conftest import boot_config
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import mark, total
from test_net import GUEST_IP, HOST_IP, add_tap, new_netns, sh

MMDS = "169.254.169.254"
SIZE_LIMIT = 20000
METADATA = {"latest": {"meta-data": {"ami-id": "ami-12345678", "hostname": "guest-one",
                                     "tags": {"role": "test"}}}}
# busybox wget cannot PUT: a hand-written request through nc, from files
# (pipelines are unsafe on PVM hosts: see resources/rootfs/shell.sh).
TOKEN = (f"printf 'PUT /latest/api/token HTTP/1.1\\r\\nHost: {MMDS}\\r\\n"
         f"X-metadata-token-ttl-seconds: 21600\\r\\n\\r\\n' > /tmp/req && "
         f"nc -w 2 {MMDS} 80 < /tmp/req > /tmp/reply; cat /tmp/reply")


def test_guest_reads_mmds(ember, guest, tmp_path):
    netns = new_netns()
    ns = ("ip", "netns", "exec", netns)
    try:
        add_tap(netns, "tap0")
        add_tap(netns, "tap1", host_ip="172.31.0.1")
        config = boot_config(
            guest["vmlinux"],
            boot_args=shell_boot_args() + f" ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off")
        config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                             "is_root_device": True, "is_read_only": True}]
        config["network-interfaces"] = [{"iface_id": "eth0", "host_dev_name": "tap0"},
                                        {"iface_id": "eth1", "host_dev_name": "tap1"}]
        config["mmds-config"] = {"network_interfaces": ["eth0"], "version": "V2"}
        metrics = tmp_path / "metrics.json"
        config["metrics"] = {"metrics_path": str(metrics)}
        metadata = tmp_path / "metadata.json"
        metadata.write_text(json.dumps(METADATA))
        shell = GuestShell(ember, tmp_path, config, api=True, prefix=ns,
                           args=["--metadata", str(metadata),
                                 "--mmds-size-limit", str(SIZE_LIMIT)])
        try:
            run_checks(shell, ns, metrics)
        finally:
            shell.close()
    finally:
        sh("ip", "netns", "del", netns, check=False)


def run_checks(shell, ns, metrics):
    # The host sees the --metadata document, and the config.
    assert shell.request("GET", "/mmds") == (200, METADATA)
    status, vm = shell.request("GET", "/vm/config")
    assert vm["mmds-config"] == {"version": "V2", "network_interfaces": ["eth0"],
                                 "ipv4_address": MMDS, "imds_compat": False}, vm
    # Configuration only before the start.
    status, body = shell.request("PUT", "/mmds/config", {"network_interfaces": ["eth1"]})
    assert status == 400, body

    shell.wait_ready()
    shell.check(f"ip route add {MMDS} dev eth0")
    before = mark(metrics)

    # V2: no token, no data.
    status, out = shell.run(f"wget -q -O - http://{MMDS}/latest/meta-data/")
    assert status != 0, out
    status, out = shell.run(f"wget -O - http://{MMDS}/latest/meta-data/ 2>&1")
    assert b"401" in out, out

    reply = shell.check(TOKEN)
    assert reply.startswith("HTTP/1.1 200"), reply  # no reason phrase, as Firecracker
    token = reply.replace("\r", "").split("\n\n", 1)[1].strip()
    assert token, reply
    shell.check(f"echo '{token}' > /tmp/token")
    get = "wget -q -O - --header \"X-metadata-token: $(cat /tmp/token)\""
    assert shell.check(f"{get} http://{MMDS}/latest/meta-data/") == "ami-id\nhostname\ntags/"
    assert shell.check(f"{get} http://{MMDS}/latest/meta-data/ami-id") == "ami-12345678"
    as_json = shell.check(f"{get} --header 'Accept: application/json' "
                          f"http://{MMDS}/latest/meta-data/tags")
    assert json.loads(as_json) == {"role": "test"}, as_json

    # A PATCH from the host is what the guest reads next.
    status, _ = shell.request("PATCH", "/mmds",
                              {"latest": {"meta-data": {"hostname": "patched"}}})
    assert status == 204
    assert shell.check(f"{get} http://{MMDS}/latest/meta-data/hostname") == "patched"

    # Over the size limit: 413, and the store keeps what it had.
    status, body = shell.request("PUT", "/mmds", {"big": "x" * (SIZE_LIMIT + 10)})
    assert status == 413, body
    assert "MMDS limit exceeded" in body["fault_message"], body
    assert shell.check(f"{get} http://{MMDS}/latest/meta-data/hostname") == "patched"

    # Round trips: a small leaf, and a document near the limit.
    small_us, small_cpu = time_gets(shell, get, f"http://{MMDS}/latest/meta-data/ami-id", 5)
    big = "y" * (SIZE_LIMIT - 200)
    status, body = shell.request("PATCH", "/mmds", {"big": big})
    assert status == 204, body
    shell.check(f"wget -q -O /tmp/big --header \"X-metadata-token: $(cat /tmp/token)\" "
                f"http://{MMDS}/big")
    assert shell.check("wc -c < /tmp/big").strip() == str(len(big))
    big_us, big_cpu = time_gets(shell, get, f"http://{MMDS}/big", 5)
    _, idle_cpu = time_gets(shell, "true", "", 5)
    print(f"\nMMDS round trip in the guest (busybox wget, process start included): "
          f"{small_us} us for a {len('ami-12345678')}-byte leaf, "
          f"{big_us} us for a {len(big)}-byte leaf; VMM thread CPU per request: "
          f"{small_cpu} us and {big_cpu} us ({idle_cpu} us per loop without a request)")

    # The TAP is still reached beside MMDS.
    assert "1 packets received" in shell.check(f"ping -c 1 -W 5 {HOST_IP}")

    # eth1 is not in network_interfaces: the address is nobody's there.
    shell.check("ip addr add 172.31.0.2/24 dev eth1 && ip link set eth1 up && "
                f"ip route replace {MMDS} dev eth1")
    status, out = shell.run(f"timeout 5 wget -q -O - --header \"X-metadata-token: "
                            f"$(cat /tmp/token)\" http://{MMDS}/latest/meta-data/ami-id")
    assert status != 0 and b"ami-" not in out, out
    shell.check(f"ip route replace {MMDS} dev eth0")
    assert shell.check(f"{get} http://{MMDS}/latest/meta-data/ami-id") == "ami-12345678"

    # The metrics line counts it under Firecracker's names.
    assert shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
    assert total(metrics, "mmds", "rx_accepted", before) > 0
    assert total(metrics, "mmds", "rx_invalid_token", before) + \
        total(metrics, "mmds", "rx_no_token", before) >= 2
    assert total(metrics, "mmds", "tx_frames", before) > 0


def vmm_thread_cpu_ns(pid):
    """CPU time of Ember's VMM thread (its main thread, which serves the
    devices and MMDS), from the scheduler's own count."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def time_gets(shell, get, url, n):
    """Microseconds per wget of `url`, averaged over `n` in a row (timed by
    /proc/uptime: busybox date has no %N), and the VMM thread's CPU
    microseconds per wget."""
    cpu = vmm_thread_cpu_ns(shell.proc.pid)
    out = shell.check(f"cat /proc/uptime; i=0; while [ $i -lt {n} ]; do "
                      f"{get} {url} > /dev/null || exit 1; i=$((i+1)); done; cat /proc/uptime",
                      timeout=300)
    cpu = vmm_thread_cpu_ns(shell.proc.pid) - cpu
    start, end = (float(line.split()[0]) for line in out.strip().splitlines())
    return int((end - start) * 1e6 / n), cpu // 1000 // n


def test_v1_imds_compat_and_a_restored_guest(ember, guest, tmp_path):
    """V1 serves a guest without a token; imds_compat answers in EC2's
    plain text even to Accept: application/json. A snapshot keeps the MMDS
    configuration (the restored guest reaches MMDS on the same interface
    and address), not the data, and a token from before the snapshot is
    not valid after it (the token keys are the new process's)."""
    netns = new_netns()
    ns = ("ip", "netns", "exec", netns)
    try:
        add_tap(netns, "tap0")
        config = boot_config(
            guest["vmlinux"],
            boot_args=shell_boot_args() + f" ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off")
        config["drives"] = [{"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
                             "is_root_device": True, "is_read_only": True}]
        # With Firecracker's mtu, which the guest's driver takes.
        config["network-interfaces"] = [{"iface_id": "eth0", "host_dev_name": "tap0",
                                         "mtu": 1400}]
        mmds_config = {"version": "V1", "network_interfaces": ["eth0"], "ipv4_address": MMDS,
                       "imds_compat": True}
        config["mmds-config"] = mmds_config
        first = tmp_path / "first"
        first.mkdir()
        shell = GuestShell(ember, first, config, api=True, prefix=ns)
        files = {"state": first / "vm.snap", "mem": first / "vm.mem"}
        try:
            assert shell.request("PUT", "/mmds", METADATA)[0] == 204
            shell.wait_ready()
            assert shell.check("cat /sys/class/net/eth0/mtu").strip() == "1400"
            shell.check(f"ip route add {MMDS} dev eth0")
            leaf = f"http://{MMDS}/latest/meta-data/ami-id"
            assert shell.check(f"wget -q -O - {leaf}") == "ami-12345678"
            listing = shell.check(f"wget -q -O - --header 'Accept: application/json' "
                                  f"http://{MMDS}/latest/meta-data/tags")
            assert listing == "role", listing
            reply = shell.check(TOKEN)
            token = reply.replace("\r", "").split("\n\n", 1)[1].strip()
            assert reply.startswith("HTTP/1.1 200") and token, reply
            shell.check(f"echo '{token}' > /tmp/token")
            assert shell.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
            status, body = shell.request("PUT", "/snapshot/create", {
                "snapshot_path": str(files["state"]), "mem_file_path": str(files["mem"])})
            assert status == 204, body
        finally:
            shell.close()

        second = tmp_path / "second"
        second.mkdir()
        shell = GuestShell(ember, second, api=True, prefix=ns)
        try:
            metrics = second / "metrics.json"
            assert shell.request("PUT", "/metrics", {"metrics_path": str(metrics)})[0] == 204
            status, body = shell.request("PUT", "/snapshot/load", {
                "snapshot_path": str(files["state"]),
                "mem_backend": {"backend_type": "File", "backend_path": str(files["mem"])},
                "resume_vm": True})
            assert status == 204, (body, shell.log())
            assert shell.request("GET", "/vm/config")[1]["mmds-config"] == mmds_config
            assert shell.request("GET", "/mmds") == (200, {}), "the data is not in a snapshot"
            status, body = shell.request("PUT", "/mmds/config", {"network_interfaces": ["eth0"]})
            assert status == 400, body
            after = {"latest": {"meta-data": {"ami-id": "ami-after"}}}
            assert shell.request("PUT", "/mmds", after)[0] == 204
            before = mark(metrics)
            assert shell.check(f"wget -q -O - {leaf}") == "ami-after"
            # V1 serves a request with a stale token too, and counts it.
            old = f"wget -q -O - --header \"X-metadata-token: $(cat /tmp/token)\" {leaf}"
            assert shell.check(old) == "ami-after"
            assert shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
            assert total(metrics, "mmds", "rx_invalid_token", before) == 1
            assert total(metrics, "mmds", "rx_no_token", before) >= 1
        finally:
            shell.close()
    finally:
        sh("ip", "netns", "del", netns, check=False)
