// Shared helpers for rotq's tests: where the data lives, temporary directories, running the CLI.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#ifndef ROTQ_SHARED_DATA_DIR
#define ROTQ_SHARED_DATA_DIR "../shared/data"
#endif
#ifndef ROTQ_SOURCE_DIR
#define ROTQ_SOURCE_DIR "."
#endif

namespace rotq_test {

// ../shared/data beside the checkout (override with ROTQ_SHARED_DATA).
inline std::string shared_data(const std::string& rel) {
  const char* env = std::getenv("ROTQ_SHARED_DATA");
  return std::string(env ? env : ROTQ_SHARED_DATA_DIR) + "/" + rel;
}

// Data vendored in the project (data/).
inline std::string project_data(const std::string& rel) {
  return std::string(ROTQ_SOURCE_DIR) + "/data/" + rel;
}

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rotq-test-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    if (!p) std::abort();
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& rel = "") const { return (path_ / rel).string(); }

 private:
  std::filesystem::path path_;
};

// Runs a shell command; returns its exit status and captures stdout (and stderr when asked).
struct CommandResult {
  int status = -1;
  std::string output;
};
inline CommandResult run_command(const std::string& cmd, bool merge_stderr = true) {
  CommandResult r;
  std::string full = merge_stderr ? cmd + " 2>&1" : cmd;
  FILE* f = popen(full.c_str(), "r");
  if (!f) return r;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) r.output.append(buf, n);
  int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

}  // namespace rotq_test
