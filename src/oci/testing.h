// A directory under /tmp for a test, removed with everything in it.
#pragma once

#include <stdlib.h>

#include <string>

namespace ember::oci::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ember-oci-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { (void)!system(("rm -rf " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ember::oci::testing
