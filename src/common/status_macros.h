// src/common is the bottom layer: status helpers, logging, fds, clocks,
// exit codes, KVM ioctl numbers, the JSON field reader and the byte codec
// snapshots are written with. It uses nothing of the project above it.
//
// Early-return helpers for absl::Status, which Abseil 20220623 lacks.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define EMBER_CONCAT_INNER(a, b) a##b
#define EMBER_CONCAT(a, b) EMBER_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    if (absl::Status _st = (expr); !_st.ok()) {    \
      return _st;                                  \
    }                                              \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())` binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(EMBER_CONCAT(_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
