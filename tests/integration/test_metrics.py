"""The metrics line in Firecracker's shape, from a real guest: every group
and field Kata Containers' parser reads (src/runtime/virtcontainers/
fc_metrics.go) is there with an unsigned integer, and the counters move with
what the guest and the API client did. Counts are changes since the line
before, as Firecracker's; a fatal signal leaves a last line saying which."""

import os
import signal
import subprocess
import time

from conftest import EXIT_OK, boot_config, wait_for_api
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import mark, read_lines, total

# fc_metrics.go's FirecrackerMetrics, group by group.
KATA = {
    "api_server": ["process_startup_time_us", "process_startup_time_cpu_us",
                   "sync_response_fails", "sync_vmm_send_timeout_count"],
    "block": ["activate_fails", "cfg_fails", "no_avail_buffer", "event_fails", "execute_fails",
              "invalid_reqs_count", "flush_count", "queue_event_count",
              "rate_limiter_event_count", "update_count", "update_fails", "read_bytes",
              "write_bytes", "read_count", "write_count", "rate_limiter_throttled_events"],
    "get_api_requests": ["instance_info_count", "instance_info_fails", "machine_cfg_count",
                         "machine_cfg_fails"],
    "i8042": ["error_count", "missed_read_count", "missed_write_count", "read_count",
              "reset_count", "write_count"],
    "latencies_us": ["full_create_snapshot", "diff_create_snapshot", "load_snapshot",
                     "pause_vm", "resume_vm", "vmm_full_create_snapshot",
                     "vmm_diff_create_snapshot", "vmm_load_snapshot", "vmm_pause_vm",
                     "vmm_resume_vm"],
    "logger": ["missed_metrics_count", "metrics_fails", "missed_log_count", "log_fails"],
    "mmds": ["rx_accepted", "rx_accepted_err", "rx_accepted_unusual", "rx_bad_eth", "rx_count",
             "tx_bytes", "tx_count", "tx_errors", "tx_frames", "connections_created",
             "connections_destroyed"],
    "net": ["activate_fails", "cfg_fails", "mac_address_updates", "no_rx_avail_buffer",
            "no_tx_avail_buffer", "event_fails", "rx_queue_event_count",
            "rx_event_rate_limiter_count", "rx_partial_writes", "rx_rate_limiter_throttled",
            "rx_tap_event_count", "rx_bytes_count", "rx_packets_count", "rx_fails", "rx_count",
            "tap_read_fails", "tap_write_fails", "tx_bytes_count", "tx_malformed_frames",
            "tx_fails", "tx_count", "tx_packets_count", "tx_partial_reads",
            "tx_queue_event_count", "tx_rate_limiter_event_count", "tx_rate_limiter_throttled",
            "tx_spoofed_mac_count"],
    "patch_api_requests": ["drive_count", "drive_fails", "network_count", "network_fails",
                           "machine_cfg_count", "machine_cfg_fails"],
    "put_api_requests": ["actions_count", "actions_fails", "boot_source_count",
                         "boot_source_fails", "drive_count", "drive_fails", "logger_count",
                         "logger_fails", "machine_cfg_count", "machine_cfg_fails",
                         "metrics_count", "metrics_fails", "network_count", "network_fails"],
    "seccomp": ["num_faults"],
    "vcpu": ["exit_io_in", "exit_io_out", "exit_mmio_read", "exit_mmio_write", "failures",
             "filter_cpuid"],
    "vmm": ["device_events", "panic_count"],
    "uart": ["error_count", "flush_count", "missed_read_count", "missed_write_count",
             "read_count", "write_count"],
    "signals": ["sigbus", "sigsegv"],
    "vsock": ["activate_fails", "cfg_fails", "rx_queue_event_fails", "tx_queue_event_fails",
              "ev_queue_event_fails", "muxer_event_fails", "conn_event_fails",
              "rx_queue_event_count", "tx_queue_event_count", "rx_bytes_count",
              "tx_bytes_count", "rx_packets_count", "tx_packets_count", "conns_added",
              "conns_killed", "conns_removed", "killq_resync", "tx_flush_fails",
              "tx_write_fails", "rx_read_fails"],
}
# Kata reads "rtc" too, which Firecracker writes on aarch64 only; Go's
# json.Unmarshal leaves a group it does not find at 0.

# Groups Firecracker writes besides, with what Ember adds after its fields.
FIRECRACKER_ALSO = ["balloon", "deprecated_api", "entropy", "pmem", "interrupts",
                    "memory_hotplug"]


def is_uint64(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64


def kata_problems(line):
    """What Kata's parser would not find, or find with a wrong type."""
    problems = []
    for group, fields in KATA.items():
        if not isinstance(line.get(group), dict):
            problems.append(f"{group}: missing")
            continue
        for field in fields:
            if not is_uint64(line[group].get(field)):
                problems.append(f"{group}.{field}: {line[group].get(field)!r}")
    return problems


def flush(shell):
    status, reply = shell.request("PUT", "/actions", {"action_type": "FlushMetrics"})
    assert status == 204, reply


def test_a_guests_work_moves_firecrackers_counters(ember, guest, tmp_path):
    metrics = tmp_path / "metrics.json"
    data = tmp_path / "data.img"
    data.write_bytes(os.urandom(4 << 20))
    config = boot_config(guest["vmlinux"], boot_args=shell_boot_args())
    config["drives"] = [
        {"drive_id": "rootfs", "path_on_host": str(guest["rootfs.ext4"]),
         "is_root_device": True, "is_read_only": True},
        {"drive_id": "data", "path_on_host": str(data), "is_root_device": False,
         "is_read_only": True}]
    config["entropy"] = {}
    config["metrics"] = {"metrics_path": str(metrics)}
    shell = GuestShell(ember, tmp_path, config, api=True)
    try:
        shell.wait_ready()
        start = mark(metrics)
        # The guest reads a MiB of its data drive and 64 bytes of entropy,
        # and prints to its console; a client asks the API a few things,
        # one of them refused.
        assert shell.check("dd if=/dev/vdb of=/dev/null bs=64k count=16 2>&1 | tail -1")
        assert shell.check("dd if=/dev/hwrng of=/dev/null bs=64 count=1 2>/dev/null; echo ok") \
            == "ok\n"
        assert shell.request("GET", "/")[0] == 200
        assert shell.request("GET", "/machine-config")[0] == 200
        status, _ = shell.request("PATCH", "/drives/data",
                                  {"drive_id": "data", "path_on_host": "/nonexistent"})
        assert status == 400
        assert shell.request("PATCH", "/vm", {"state": "Paused"})[0] == 204
        assert shell.request("PATCH", "/vm", {"state": "Resumed"})[0] == 204
        flush(shell)
        flush(shell)  # this one's line counts the first flush's request
        last = read_lines(metrics)[-1]

        assert kata_problems(last) == []
        for group in FIRECRACKER_ALSO:
            assert isinstance(last[group], dict) and last[group], group
        assert "block_rootfs" in last and "block_data" in last
        assert set(last["block_data"]) >= set(KATA["block"]), "per drive, every field"
        assert last["ember"]["vm_state"] == "Running"
        assert is_uint64(last["utc_timestamp_ms"])
        assert abs(last["utc_timestamp_ms"] - time.time() * 1000) < 60_000

        def moved(group, field):
            return total(metrics, group, field, since=start)

        assert moved("block_data", "read_bytes") >= 1 << 20
        assert moved("block_data", "read_count") >= 16
        assert moved("block", "read_bytes") >= moved("block_data", "read_bytes")
        assert moved("block_data", "queue_event_count") > 0
        assert moved("entropy", "entropy_bytes") >= 64
        assert moved("uart", "write_count") > 0, "the guest's console output"
        assert moved("uart", "read_count") > 0, "the commands it read"
        for exit_kind in ("exit_io_in", "exit_io_out", "exit_mmio_read", "exit_mmio_write"):
            assert moved("vcpu", exit_kind) > 0, exit_kind
        assert moved("interrupts", "triggers") > 0
        assert moved("vmm", "device_events") > 0
        assert moved("get_api_requests", "instance_info_count") == 1
        assert moved("get_api_requests", "machine_cfg_count") == 1
        assert moved("patch_api_requests", "drive_count") == 1
        assert moved("patch_api_requests", "drive_fails") == 1
        assert moved("put_api_requests", "actions_count") >= 1
        assert last["latencies_us"]["pause_vm"] > 0 and last["latencies_us"]["resume_vm"] > 0
        assert last["latencies_us"]["vmm_pause_vm"] <= last["latencies_us"]["pause_vm"]
        assert last["seccomp"]["num_faults"] == 0 and last["signals"]["sigsegv"] == 0

        # Nothing read the data drive since the line before: its change is 0.
        flush(shell)
        again = read_lines(metrics)[-1]
        assert again["block_data"]["read_bytes"] == 0, again["block_data"]
        assert again["latencies_us"] == last["latencies_us"], "levels stay as they are"

        # The guest reboots through the keyboard controller; the line
        # written at exit counts it.
        before_exit = mark(metrics)
        assert shell.ctrl_alt_del() == EXIT_OK
        assert total(metrics, "i8042", "reset_count", since=before_exit) >= 1
        assert kata_problems(read_lines(metrics)[-1]) == []
    finally:
        shell.close()


def test_a_fatal_signal_leaves_a_last_line_and_firecrackers_exit_code(ember, tmp_path):
    metrics = tmp_path / "metrics.json"
    sock = tmp_path / "api.sock"
    with open(tmp_path / "ember.log", "wb") as log:
        proc = subprocess.Popen([str(ember), "--api-sock", str(sock),
                                 "--metrics-path", str(metrics)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for_api(sock, proc)
        # SIGPIPE is counted and survived, as in Firecracker.
        proc.send_signal(signal.SIGPIPE)
        time.sleep(0.2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGBUS)
        assert proc.wait(timeout=30) == 149  # Firecracker's code for SIGBUS
    finally:
        proc.kill()
        proc.wait()
    last = read_lines(metrics)[-1]
    assert last["signals"]["sigbus"] == 1 and last["signals"]["sigsegv"] == 0
    assert last["signals"]["sigpipe"] == 1
    assert last["seccomp"]["num_faults"] == 0
    assert "received sigbus; exiting with 149" in (tmp_path / "ember.log").read_text()
