// virtio-blk throughput through the host-side driver: no guest, so what is
// measured is Ember's device path (queue, parsing, engine) plus the host's
// page cache. 4 KiB random reads and writes and 1 MiB sequential ones,
// Sync against Async, 32 requests in flight per batch. Besides Google
// Benchmark's figures it reports host CPU per request, counting every
// thread of the process (io_uring's workers included).
//
//   build/ember_bench_block [--benchmark_format=json --benchmark_out=block.json]
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "src/common/clock.h"
#include "src/common/log.h"
#include "src/devices/virtio/block/block_device.h"
#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/mmio_driver.h"

namespace ember::virtio::block {
namespace {

constexpr uint64_t kDiskBytes = 256ull << 20;
constexpr uint64_t kMemBytes = 128ull << 20;
constexpr uint64_t kHeaders = 0x100000;
constexpr uint64_t kData = 0x1000000;
constexpr int kBatch = 32;

std::string DiskFile() {
  static std::string path = [] {
    std::string p = "/var/tmp/ember-bench-disk.img";
    int fd = open(p.c_str(), O_RDWR | O_CREAT, 0600);
    std::vector<uint8_t> chunk(1 << 20, 0x5a);
    for (uint64_t off = 0; off < kDiskBytes; off += chunk.size()) {
      (void)!pwrite(fd, chunk.data(), chunk.size(), off);
    }
    close(fd);
    return p;
  }();
  return path;
}

void BM_Block(benchmark::State& state) {
  SetLogLevel(LogLevel::kError);
  const IoEngine engine = state.range(0) ? IoEngine::kAsync : IoEngine::kSync;
  const uint32_t type = state.range(1) ? kRequestOut : kRequestIn;
  const uint32_t size = static_cast<uint32_t>(state.range(2));
  const bool sequential = size >= (1 << 20);

  GuestMemory mem = *GuestMemory::Create({{0, kMemBytes}});
  DriveConfig config{"bench", DiskFile()};
  config.io_engine = engine;
  auto dev = BlockDevice::Create(config);
  if (!dev.ok()) {
    state.SkipWithError(std::string(dev.status().message()).c_str());
    return;
  }
  BlockDevice* device = dev->get();
  MmioTransport transport(std::move(*dev), &mem, UniqueFd(eventfd(0, EFD_NONBLOCK)));
  testing::MmioDriver driver(transport, mem, 0x10000);
  driver.Init(~0ull, 256);
  testing::DriverQueue& q = driver.queue(0);

  const uint64_t sectors = kDiskBytes / 512, per_request = size / 512;
  uint64_t next = 0, rng = 12345;
  int64_t requests = 0;
  double cpu_start = ProcessCpuMs() * 1e3;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; i++) {
      uint64_t sector;
      if (sequential) {
        sector = next;
        next = (next + per_request) % sectors;
      } else {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        sector = ((rng >> 20) % (sectors / per_request)) * per_request;
      }
      uint64_t header = kHeaders + i * 64;
      (void)mem.WriteObj(header, RequestHeader{type, 0, sector});
      uint64_t data = kData + uint64_t(i) * (sequential ? size : 4096);
      q.Add({{header, 16, false}, {data, size, type == kRequestIn}, {header + 16, 1, true}});
    }
    driver.Kick(0);
    int done = 0;
    while (done < kBatch) {
      while (q.PopUsed()) done++;
      if (done < kBatch) {
        pollfd p = {device->backend_fd(), POLLIN, 0};
        poll(&p, 1, 1000);
        transport.NotifyBackend(EPOLLIN);
      }
    }
    requests += kBatch;
  }
  double cpu_us = ProcessCpuMs() * 1e3 - cpu_start;
  state.SetItemsProcessed(requests);
  state.SetBytesProcessed(requests * size);
  state.counters["host_cpu_us_per_req"] = cpu_us / std::max<int64_t>(requests, 1);
  state.counters["errors"] = device->counters().backend_errors;
}

// Args: engine (0 Sync, 1 Async), write (0/1), request size.
BENCHMARK(BM_Block)
    ->ArgNames({"async", "write", "bytes"})
    ->Args({0, 0, 4096})->Args({1, 0, 4096})
    ->Args({0, 1, 4096})->Args({1, 1, 4096})
    ->Args({0, 0, 1 << 20})->Args({1, 0, 1 << 20})
    ->Args({0, 1, 1 << 20})->Args({1, 1, 1 << 20})
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace
}  // namespace ember::virtio::block

BENCHMARK_MAIN();
