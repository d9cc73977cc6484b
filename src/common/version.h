// Ember's version, from the build (CMake's project version), and the
// Firecracker API version it answers to.
#pragma once

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0"
#endif

namespace ember {

inline constexpr char kVersion[] = EMBER_VERSION;

// The Firecracker API Ember implements: info.version of the Firecracker
// API description it follows. Clients take it for Firecracker's release
// (GET /version's firecracker_version).
inline constexpr char kFirecrackerApiVersion[] = "1.17.0-dev";

}  // namespace ember
