// What the vsock device tests share: a device listening in a fresh
// directory, behind its transport, driven by the host-side VsockDriver,
// and host programs as plain Unix sockets.
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "src/devices/virtio/mmio_transport.h"
#include "src/devices/virtio/testing/vsock_driver.h"
#include "src/devices/virtio/vsock/vsock_device.h"

namespace ember::virtio::vsock {

inline constexpr uint32_t kGuestCid = 3;

class VsockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ember-vsock-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    uds_ = dir_ + "/v.sock";
    mem_ = std::make_unique<GuestMemory>(
        *GuestMemory::Create({{0, testing::VsockDriver::kMemoryNeeded}}));
  }
  void TearDown() override {
    driver_.reset();
    transport_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Makes the device (with `limits`) and runs the driver's init.
  void Start(VsockLimits limits = {}, uint16_t queue_size = 256) {
    auto dev = VsockDevice::Create({"vsock0", kGuestCid, uds_}, limits);
    ASSERT_TRUE(dev.ok()) << dev.status();
    device_ = dev->get();
    transport_ = std::make_unique<MmioTransport>(std::move(*dev), mem_.get(),
                                                 UniqueFd(eventfd(0, EFD_NONBLOCK)));
    driver_ = std::make_unique<testing::VsockDriver>(*transport_, *mem_, kGuestCid);
    ASSERT_TRUE(driver_->Init(queue_size) & kStatusDriverOk);
  }

  // Runs the VMM loop's share for the device until its fd stays quiet for
  // `quiet_ms`.
  void Pump(int quiet_ms = 20) { Pump(*transport_, quiet_ms); }
  static void Pump(MmioTransport& transport, int quiet_ms = 20) {
    for (int i = 0; i < 1000; i++) {
      pollfd p = {transport.device().backend_fd(), POLLIN, 0};
      if (poll(&p, 1, quiet_ms) != 1) return;
      transport.NotifyBackend(EPOLLIN);
    }
  }

  // A host program: connected to `path` (uds_path by default).
  int HostConnect(const std::string& path = "") {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::string p = path.empty() ? uds_ : path;
    std::strncpy(addr.sun_path, p.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << p;
    timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return Track(fd);
  }

  // A host program listening for the guest's connections to `port`.
  int HostListen(uint32_t port) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::string p = uds_ + "_" + std::to_string(port);
    std::strncpy(addr.sun_path, p.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd, 128), 0);
    return Track(fd);
  }

  static void Write(int fd, const std::string& s) {
    ASSERT_EQ(send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // Up to `n` bytes, waiting at most `ms` for the first.
  static std::string Read(int fd, size_t n = 4096, int ms = 2000) {
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) != 1) return "";
    std::string out(n, '\0');
    ssize_t got = recv(fd, out.data(), n, MSG_DONTWAIT);
    out.resize(got > 0 ? got : 0);
    return out;
  }
  // True once the peer closed, within `ms`: EOF, or ECONNRESET when it
  // closed with our bytes unread.
  static bool Closed(int fd, int ms = 2000) {
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) != 1) return false;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

  // Host-initiated: CONNECT to `port`, the guest accepts from `guest_port`
  // having seen the REQUEST; returns the host fd and sets *host_port.
  int ConnectFromHost(uint32_t port, uint32_t* host_port) {
    int fd = HostConnect();
    Write(fd, "CONNECT " + std::to_string(port) + "\n");
    Pump();
    if (driver_->rx_buffers_given() == 0) driver_->AddRxBuffers(8);
    std::optional<testing::VsockPacket> req = driver_->Receive();
    EXPECT_TRUE(req.has_value());
    if (!req) return fd;
    EXPECT_EQ(req->header.op, kOpRequest);
    EXPECT_EQ(req->header.dst_port, port);
    *host_port = req->header.src_port;
    driver_->Send(driver_->Header(port, *host_port, kOpResponse));
    EXPECT_EQ(Read(fd), "OK " + std::to_string(*host_port) + "\n");
    return fd;
  }

  int Track(int fd) {
    fds_.emplace_back(fd);
    return fd;
  }

  std::string dir_, uds_;
  std::unique_ptr<GuestMemory> mem_;
  VsockDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<testing::VsockDriver> driver_;
  std::vector<UniqueFd> fds_;
};

inline std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string Text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

}  // namespace ember::virtio::vsock
