"""The metrics line in Firecracker's shape, from a real guest: every group
and field Kata Containers' parser reads (src/runtime/virtcontainers/
fc_metrics.go) is there with an unsigned integer, and the counters move with
what the guest and the API client did. Counts are changes since the line
before, as Firecracker's; a fatal signal leaves a last line saying which."""

import os
import signal
import subprocess
import time

from conftest import EXIT_OK, boot_config, http_request, wait_for_api
from guest_shell import GuestShell, shell_boot_args
from metrics_lines import KATA, is_uint64, mark, read_lines, total


# Groups Firecracker writes besides, with what Ember adds after its fields.
FIRECRACKER_ALSO = ["balloon", "deprecated_api", "entropy", "pmem", "interrupts",
                    "memory_hotplug"]


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
        # What came before (the readiness checks' requests) goes into a line
        # of its own, before `start`.
        flush(shell)
        start = mark(metrics)
        # The guest reads a MiB of its data drive and 64 bytes of entropy,
        # and prints to its console; a client asks the API a few things,
        # one of them refused.
        # (Direct: readahead would merge the reads into fewer requests.)
        assert shell.check("dd if=/dev/vdb of=/dev/null bs=64k count=16 iflag=direct 2>&1 "
                           "| tail -1")
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


def test_lines_carry_the_instance_id_and_the_operators_properties(ember, tmp_path):
    metrics = tmp_path / "metrics.json"
    sock = tmp_path / "api.sock"
    with open(tmp_path / "ember.log", "wb") as log:
        proc = subprocess.Popen([str(ember), "--api-sock", str(sock), "--id", "fn-42"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for_api(sock, proc)
        body = {"metrics_path": str(metrics), "emit_id": True,
                "properties": {"tenant": "a\"b", "bundle": "fn-abc"}}
        status, reply = http_request(sock, "PUT", "/metrics", {**body, "properties": {"n": 1}})
        assert status == 400 and "metrics.properties.n must be a string" in \
            reply["fault_message"], reply
        assert http_request(sock, "PUT", "/metrics", body)[0] == 204
        assert http_request(sock, "PUT", "/actions", {"action_type": "FlushMetrics"})[0] == 204
        line = read_lines(metrics)[-1]
        assert list(line)[:3] == ["utc_timestamp_ms", "id", "properties"], list(line)[:4]
        assert line["id"] == "fn-42" and line["properties"] == body["properties"]
        # The line a fatal signal leaves has them too.
        proc.send_signal(signal.SIGBUS)
        assert proc.wait(timeout=30) == 149
    finally:
        proc.kill()
        proc.wait()
    last = read_lines(metrics)[-1]
    assert last["signals"]["sigbus"] == 1
    assert last["id"] == "fn-42" and last["properties"] == body["properties"]
