"""Reading Ember's metrics file. As Firecracker, a line reports each count
as its change since the line before (and levels as they are), and a line
comes every 60 s besides those FlushMetrics asks for: a test adds up the
lines written since a mark to see what moved."""

import json


def read_lines(path):
    """Every line of the metrics file, parsed."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mark(path):
    """How many lines the file has now: the start of what total() adds."""
    return len(read_lines(path)) if path.exists() else 0


def total(path, group, field, since=0):
    """A count's change over the lines from `since` on (a group a line lacks,
    as in the short line of a fatal signal, counts 0)."""
    return sum(line.get(group, {}).get(field, 0) for line in read_lines(path)[since:])


# fc_metrics.go's FirecrackerMetrics, group by group: what Kata Containers
# reads (its "rtc" group too, which Firecracker writes on aarch64 only).
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


def is_uint64(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64
