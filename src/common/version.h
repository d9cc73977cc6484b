// Ember's version, from the build (CMake's project version).
#pragma once

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0"
#endif

namespace ember {

inline constexpr char kVersion[] = EMBER_VERSION;

}  // namespace ember
