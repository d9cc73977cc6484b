#include "api/metrics_schema.h"

namespace ember::api {
namespace {

constexpr MetricKind C = MetricKind::kCount;
constexpr MetricKind L = MetricKind::kLevel;
constexpr MetricKind A = MetricKind::kLatency;

// Fields marked "older Firecracker" left Firecracker since, but Kata
// Containers' parser (src/runtime/virtcontainers/fc_metrics.go) still
// reads them; they stay, so that it finds every field it knows.

constexpr MetricField kApiServer[] = {
    {"process_startup_time_us", L}, {"process_startup_time_cpu_us", L},
    {"sync_response_fails", C}, {"sync_vmm_send_timeout_count", C},  // older Firecracker
};

constexpr MetricField kBalloon[] = {
    {"activate_fails", C},         {"inflate_count", C},          {"stats_updates_count", C},
    {"stats_update_fails", C},     {"deflate_count", C},          {"event_fails", C},
    {"free_page_report_count", C}, {"free_page_report_freed", C}, {"free_page_report_fails", C},
    {"free_page_hint_count", C},   {"free_page_hint_freed", C},   {"free_page_hint_fails", C},
};

constexpr MetricField kBlock[] = {
    {"activate_fails", C},
    {"cfg_fails", C},
    {"no_avail_buffer", C},
    {"event_fails", C},
    {"execute_fails", C},
    {"invalid_reqs_count", C},
    {"flush_count", C},
    {"queue_event_count", C},
    {"rate_limiter_event_count", C},
    {"update_count", C},
    {"update_fails", C},
    {"read_bytes", C},
    {"write_bytes", C},
    {"read_count", C},
    {"write_count", C},
    {"read_agg", A},
    {"write_agg", A},
    {"rate_limiter_throttled_events", C},
    {"io_engine_throttled_events", C},
    {"remaining_reqs_count", C},
};

constexpr MetricField kDeprecatedApi[] = {{"deprecated_http_api_calls", C}};

constexpr MetricField kGetApiRequests[] = {
    {"instance_info_count", C}, {"machine_cfg_count", C},     {"mmds_count", C},
    {"vmm_version_count", C},   {"hotplug_memory_count", C},
    {"instance_info_fails", C}, {"machine_cfg_fails", C},  // older Firecracker
};

constexpr MetricField kI8042[] = {
    {"error_count", C}, {"missed_read_count", C}, {"missed_write_count", C},
    {"read_count", C},  {"reset_count", C},       {"write_count", C},
};

constexpr MetricField kUart[] = {
    {"error_count", C}, {"flush_count", C}, {"missed_read_count", C}, {"missed_write_count", C},
    {"read_count", C},  {"write_count", C}, {"rate_limiter_dropped_bytes", C},
};

constexpr MetricField kLatenciesUs[] = {
    {"full_create_snapshot", L},     {"diff_create_snapshot", L},     {"load_snapshot", L},
    {"pause_vm", L},                 {"resume_vm", L},                {"vmm_full_create_snapshot", L},
    {"vmm_diff_create_snapshot", L}, {"vmm_load_snapshot", L},        {"vmm_pause_vm", L},
    {"vmm_resume_vm", L},
};

constexpr MetricField kLogger[] = {
    {"missed_metrics_count", C}, {"metrics_fails", C}, {"missed_log_count", C},
    {"rate_limited_log_count", C},
    {"log_fails", C},  // older Firecracker
};

constexpr MetricField kMmds[] = {
    {"rx_accepted", C}, {"rx_accepted_err", C},     {"rx_accepted_unusual", C},
    {"rx_bad_eth", C},  {"rx_invalid_token", C},    {"rx_no_token", C},
    {"rx_count", C},    {"tx_bytes", C},            {"tx_count", C},
    {"tx_errors", C},   {"tx_frames", C},           {"connections_created", C},
    {"connections_destroyed", C},
};

constexpr MetricField kNet[] = {
    {"activate_fails", C},
    {"cfg_fails", C},
    {"no_rx_avail_buffer", C},
    {"no_tx_avail_buffer", C},
    {"event_fails", C},
    {"rx_queue_event_count", C},
    {"rx_event_rate_limiter_count", C},
    {"rx_rate_limiter_throttled", C},
    {"rx_tap_event_count", C},
    {"rx_bytes_count", C},
    {"rx_packets_count", C},
    {"rx_fails", C},
    {"rx_count", C},
    {"tap_read_fails", C},
    {"tap_write_fails", C},
    {"tap_write_agg", A},
    {"tx_bytes_count", C},
    {"tx_malformed_frames", C},
    {"tx_fails", C},
    {"tx_count", C},
    {"tx_packets_count", C},
    {"tx_queue_event_count", C},
    {"tx_rate_limiter_event_count", C},
    {"tx_rate_limiter_throttled", C},
    {"tx_spoofed_mac_count", C},
    {"tx_remaining_reqs_count", C},
    // older Firecracker
    {"mac_address_updates", C},
    {"rx_partial_writes", C},
    {"tx_partial_reads", C},
};

constexpr MetricField kPatchApiRequests[] = {
    {"drive_count", C},          {"drive_fails", C},         {"network_count", C},
    {"network_fails", C},        {"machine_cfg_count", C},   {"machine_cfg_fails", C},
    {"mmds_count", C},           {"mmds_fails", C},          {"hotplug_memory_count", C},
    {"hotplug_memory_fails", C}, {"pmem_count", C},          {"pmem_fails", C},
};

constexpr MetricField kPutApiRequests[] = {
    {"actions_count", C},        {"actions_fails", C},        {"boot_source_count", C},
    {"boot_source_fails", C},    {"drive_count", C},          {"drive_fails", C},
    {"logger_count", C},         {"logger_fails", C},         {"machine_cfg_count", C},
    {"machine_cfg_fails", C},    {"cpu_cfg_count", C},        {"cpu_cfg_fails", C},
    {"metrics_count", C},        {"metrics_fails", C},        {"network_count", C},
    {"network_fails", C},        {"mmds_count", C},           {"mmds_fails", C},
    {"vsock_count", C},          {"vsock_fails", C},          {"pmem_count", C},
    {"pmem_fails", C},           {"serial_count", C},         {"serial_fails", C},
    {"hotplug_memory_count", C}, {"hotplug_memory_fails", C},
};

constexpr MetricField kSeccomp[] = {{"num_faults", L}};

constexpr MetricField kVcpu[] = {
    {"exit_io_in", C},
    {"exit_io_out", C},
    {"exit_mmio_read", C},
    {"exit_mmio_write", C},
    {"failures", C},
    {"kvmclock_ctrl_fails", C},
    {"exit_io_in_agg", A},
    {"exit_io_out_agg", A},
    {"exit_mmio_read_agg", A},
    {"exit_mmio_write_agg", A},
    {"filter_cpuid", C},  // older Firecracker
};

constexpr MetricField kVmm[] = {
    {"panic_count", L},
    {"device_events", C},  // older Firecracker
};

constexpr MetricField kSignals[] = {
    {"sigbus", L},  {"sigsegv", L}, {"sigxfsz", L}, {"sigxcpu", L},
    {"sigpipe", C}, {"sighup", L},  {"sigill", L},
};

constexpr MetricField kVsock[] = {
    {"activate_fails", C},       {"cfg_fails", C},            {"rx_queue_event_fails", C},
    {"tx_queue_event_fails", C}, {"ev_queue_event_fails", C}, {"muxer_event_fails", C},
    {"conn_event_fails", C},     {"rx_queue_event_count", C}, {"tx_queue_event_count", C},
    {"rx_bytes_count", C},       {"tx_bytes_count", C},       {"rx_packets_count", C},
    {"tx_packets_count", C},     {"conns_added", C},          {"conns_killed", C},
    {"conns_removed", C},        {"killq_resync", C},         {"tx_flush_fails", C},
    {"tx_write_fails", C},       {"rx_read_fails", C},
};

constexpr MetricField kEntropy[] = {
    {"activate_fails", C},
    {"entropy_event_fails", C},
    {"entropy_event_count", C},
    {"entropy_bytes", C},
    {"host_rng_fails", C},
    {"entropy_rate_limiter_throttled", C},
    {"rate_limiter_event_count", C},
};

constexpr MetricField kPmem[] = {
    {"activate_fails", C},    {"cfg_fails", C},
    {"event_fails", C},       {"queue_event_count", C},
    {"rate_limiter_throttled_events", C}, {"rate_limiter_event_count", C},
};

constexpr MetricField kInterrupts[] = {{"triggers", C}, {"config_updates", C}};

constexpr MetricField kMemoryHotplug[] = {
    {"activate_fails", C}, {"queue_event_fails", C}, {"queue_event_count", C},
    {"plug_agg", A},       {"plug_count", C},        {"plug_bytes", C},
    {"plug_fails", C},     {"unplug_agg", A},        {"unplug_count", C},
    {"unplug_bytes", C},   {"unplug_fails", C},      {"unplug_discard_fails", C},
    {"unplug_all_agg", A}, {"unplug_all_count", C},  {"unplug_all_fails", C},
    {"state_agg", A},      {"state_count", C},       {"state_fails", C},
};

// Firecracker's order: its struct's fields, with the devices' groups where
// its flattened serializers put them (i8042 and uart after the GET
// requests, each per-device group's devices before their sum).
constexpr MetricGroupSpec kGroups[] = {
    {"api_server", kApiServer},
    {"balloon", kBalloon},
    {"block", kBlock, true},
    {"deprecated_api", kDeprecatedApi},
    {"get_api_requests", kGetApiRequests},
    {"i8042", kI8042},
    {"uart", kUart},
    {"latencies_us", kLatenciesUs},
    {"logger", kLogger},
    {"mmds", kMmds},
    {"net", kNet, true},
    {"patch_api_requests", kPatchApiRequests},
    {"put_api_requests", kPutApiRequests},
    {"seccomp", kSeccomp},
    {"vcpu", kVcpu},
    {"vmm", kVmm},
    {"signals", kSignals},
    {"vsock", kVsock},
    {"entropy", kEntropy},
    {"pmem", kPmem, true},
    {"interrupts", kInterrupts},
    {"memory_hotplug", kMemoryHotplug},
};

}  // namespace

std::span<const MetricGroupSpec> FirecrackerMetricGroups() { return kGroups; }

}  // namespace ember::api
