"""virtio-net with a real Linux guest on a TAP inside a network namespace
the test creates (and deletes): the guest kernel takes its address from
ip= and answers ARP and ICMP by itself, so the host pings it. Traffic never
leaves the namespace."""

import json
import subprocess
import uuid

import pytest

from conftest import EXIT_BAD_CONFIGURATION, EXIT_SIGTERM, boot_config

HOST_IP = "172.30.0.1"
GUEST_IP = "172.30.0.2"
GUEST_MAC = "aa:fc:00:00:00:01"


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def add_tap(netns_name, dev, host_ip=HOST_IP):
    """A TAP `dev` in the namespace, up, with the host's address on it."""
    ns = ("ip", "netns", "exec", netns_name)
    sh(*ns, "ip", "tuntap", "add", "dev", dev, "mode", "tap")
    sh(*ns, "ip", "addr", "add", f"{host_ip}/24", "dev", dev)
    sh(*ns, "ip", "link", "set", dev, "up")


def new_netns(prefix="ember-it"):
    """A network namespace with loopback up; the caller deletes it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
    return name


@pytest.fixture
def netns():
    name = new_netns()
    try:
        add_tap(name, "tap0")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def test_host_pings_the_guest_and_a_lost_tap_is_survived(ember, guest, tmp_path, microvms,
                                                          netns):
    ns = ("ip", "netns", "exec", netns)
    # ember_idle: init loops without system calls, so the guest kernel
    # stays up (its user space cannot make system calls on PVM hosts).
    config = boot_config(
        guest["vmlinux"], guest["initramfs.cpio"],
        boot_args=("console=ttyS0 reboot=k panic=1 pci=off "
                   f"ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off ember_idle"))
    config["network-interfaces"] = [
        {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": GUEST_MAC}]
    vm = microvms(ember, tmp_path, config, prefix=ns)
    assert vm.wait_for_console("Run /init as init process"), vm.console()
    assert f"hwaddr={GUEST_MAC}, ipaddr={GUEST_IP}" in vm.console()

    ping = sh(*ns, "ping", "-c", "3", "-W", "5", GUEST_IP, check=False)
    assert ping.returncode == 0, ping.stdout + vm.log()
    # A full-size frame each way (1472 bytes of payload fill a 1500 MTU).
    big = sh(*ns, "ping", "-c", "2", "-W", "5", "-s", "1472", "-M", "do", GUEST_IP, check=False)
    assert big.returncode == 0, big.stdout + vm.log()
    neigh = sh(*ns, "ip", "neigh", "show", GUEST_IP).stdout
    assert GUEST_MAC in neigh

    # The TAP disappears under the running guest: logged, and Ember lives.
    sh(*ns, "ip", "link", "del", "tap0")
    assert vm.wait_for_log("TAP tap0 is gone"), vm.log()
    assert vm.proc.poll() is None, "Ember must survive a lost TAP"
    vm.proc.terminate()
    assert vm.wait() == EXIT_SIGTERM, vm.log()
    assert "all vCPU threads joined" in vm.log()


def test_busy_tap_is_a_configuration_error(ember, guest, tmp_path, netns):
    ns = ("ip", "netns", "exec", netns)
    # Another process holds tap0 (TUNSETIFF with IFF_TAP | IFF_NO_PI).
    holder = subprocess.Popen([*ns, "python3", "-c", (
        "import fcntl, os, struct, time\n"
        "fd = os.open('/dev/net/tun', os.O_RDWR)\n"
        "fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'tap0', 0x0002 | 0x1000))\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = boot_config(guest["vmlinux"])
        config["network-interfaces"] = [{"iface_id": "eth0", "host_dev_name": "tap0"}]
        path = tmp_path / "vm.json"
        path.write_text(json.dumps(config))
        proc = subprocess.run([*ns, str(ember), "--no-api", "--config-file", str(path)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == EXIT_BAD_CONFIGURATION, proc.stderr
        assert "network interface eth0: TAP tap0: Device or resource busy" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
