#include "runner/record/cell_markers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "models/base/files.h"
#include "runner/record/results.h"
#include "solvers/error.h"
#include "solvers/parse.h"

namespace rotq {
namespace {
namespace fs = std::filesystem;

std::string marker(const std::string& output, const std::string& id, const char* kind) {
  return (fs::path(cell_dir(output)) / (id + "." + kind)).string();
}

// The whole of a regular file, not following a link (a planted link reads as absent).
bool read_regular(const std::string& path, std::string* out, double* age_seconds = nullptr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20)) {
    ::close(fd);
    return false;
  }
  out->assign(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out->size()) {
    const ssize_t n = ::read(fd, out->data() + done, out->size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  out->resize(done);
  if (age_seconds) {
    const double mtime = static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9;
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    *age_seconds = std::chrono::duration<double>(now).count() - mtime;
  }
  return true;
}

struct MarkerInfo {
  std::string host;
  int64_t pid = 0;
  uint64_t pid_start = 0;
  int64_t start = 0;
  double interval = 30;
  bool parsed = false;
};

// The JSON marker, or the older "HOST PID START" line.
MarkerInfo parse_marker(const std::string& text) {
  MarkerInfo m;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    m.host = j.at("host").get<std::string>();
    m.pid = j.at("pid").get<int64_t>();
    m.pid_start = j.value("pid_start", uint64_t{0});
    m.start = j.value("start", int64_t{0});
    m.interval = j.value("heartbeat_seconds", 30.0);
    m.parsed = m.interval > 0;
    return m;
  } catch (const nlohmann::json::exception&) {
  }
  std::istringstream in(text);
  m.parsed = static_cast<bool>(in >> m.host >> m.pid >> m.start);
  return m;
}

std::string fmt_age(double s) {
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof buf, "%.0f s", std::max(0.0, s));
  } else if (s < 7200) {
    std::snprintf(buf, sizeof buf, "%.0f min", s / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
  }
  return buf;
}

// The status a .running marker's content and age give.
CellStatus judge_marker(const std::string& text, double age) {
  CellStatus s;
  const MarkerInfo m = parse_marker(text);
  if (!m.parsed) {
    s.state = CellState::kStale;
    s.certainly_dead = true;
    s.detail = "unreadable running marker (not written by rotq)";
    return s;
  }
  const std::string who = m.host + " pid " + std::to_string(m.pid);
  if (m.host == host_name()) {
    const bool alive = process_alive(m.pid, m.pid_start);
    s.state = alive ? CellState::kRunning : CellState::kStale;
    s.certainly_dead = !alive;
    s.detail = alive ? "running on " + who + ", heartbeat " + fmt_age(age) + " ago"
                     : "interrupted: " + who + " is gone";
    return s;
  }
  const bool fresh = age <= kStaleHeartbeats * m.interval;
  s.state = fresh ? CellState::kRunning : CellState::kStale;
  s.detail = (fresh ? "running on " : "stale: no heartbeat from ") + who +
             (fresh ? ", heartbeat " + fmt_age(age) + " ago" : " for " + fmt_age(age));
  return s;
}

nlohmann::json marker_content(double interval) {
  return {{"host", host_name()},
          {"pid", static_cast<int64_t>(::getpid())},
          {"pid_start", process_start_ticks(::getpid())},
          {"start", static_cast<int64_t>(std::time(nullptr))},
          {"heartbeat_seconds", interval}};
}

// Moves a stale marker (content `seen`) out of the way. False when it changed meanwhile (another
// runner took the cell over first).
bool retire_stale(const std::string& path, const std::string& seen) {
  const std::string aside =
      (fs::path(path).parent_path() / ("." + fs::path(path).filename().string() + ".rotq-tmp." +
                                       host_name() + "." + std::to_string(::getpid()) + ".0"))
          .string();
  if (std::rename(path.c_str(), aside.c_str()) != 0) return errno == ENOENT;
  std::string now;
  const bool same = read_regular(aside, &now) ? now == seen : seen.empty();
  if (!same) {
    // Give it back. When that fails (EEXIST: a third runner wrote one meanwhile), theirs stays,
    // and it is newer than ours.
    const int given_back = ::link(aside.c_str(), path.c_str());
    static_cast<void>(given_back);
  }
  ::unlink(aside.c_str());
  return same;
}

}  // namespace

const char* state_name(CellState s) {
  switch (s) {
    case CellState::kPending:
      return "pending";
    case CellState::kRunning:
      return "running";
    case CellState::kStale:
      return "stale";
    case CellState::kDone:
      return "done";
    case CellState::kFailed:
      return "failed";
  }
  return "?";
}

double heartbeat_interval_seconds() {
  const char* env = std::getenv("ROTQ_HEARTBEAT_SECONDS");
  if (!env) return 30;
  const auto v = parse_number(env);
  require(v && std::isfinite(*v) && *v > 0 && *v <= 86400, "ROTQ_HEARTBEAT_SECONDS='", env,
          "': expected seconds in (0, 86400]");
  return *v;
}

CellStatus cell_status(const std::string& output, const std::string& id, bool done) {
  CellStatus s;
  if (done) {
    s.state = CellState::kDone;
    return s;
  }
  std::string text;
  double age = 0;
  const std::string running = marker(output, id, "running");
  if (read_regular(running, &text, &age)) return judge_marker(text, age);
  struct stat st {};
  if (::lstat(running.c_str(), &st) == 0) {  // a link or something else rotq did not write
    s.state = CellState::kStale;
    s.certainly_dead = true;
    s.detail = running + " is not a regular file (not written by rotq)";
    return s;
  }
  if (read_regular(marker(output, id, "failed"), &text)) {
    s.state = CellState::kFailed;
    s.detail = text.substr(0, text.find_last_not_of('\n') + 1);
  }
  return s;
}

std::unique_ptr<RunningMarker> RunningMarker::claim(const std::string& output,
                                                    const std::string& id, bool take_over_stale,
                                                    std::string* why_not) {
  fs::create_directories(cell_dir(output));
  const std::string path = marker(output, id, "running");
  const double interval = heartbeat_interval_seconds();
  const std::string content = marker_content(interval).dump() + "\n";
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (create_file_exclusively(path, content)) {
      return std::unique_ptr<RunningMarker>(new RunningMarker(path, content, interval));
    }
    std::string seen;
    double age = 0;
    const bool regular = read_regular(path, &seen, &age);
    const CellStatus s =
        regular ? judge_marker(seen, age) : CellStatus{CellState::kStale, true, ""};
    if (s.state == CellState::kRunning) {
      *why_not = s.detail;
      return nullptr;
    }
    if (!s.certainly_dead && !take_over_stale) {
      *why_not = s.detail + " (rotq run --force-stale takes it over)";
      return nullptr;
    }
    if (!retire_stale(path, regular ? seen : "")) {
      *why_not = "taken over by another runner";
      return nullptr;
    }
  }
  *why_not = "could not claim " + path + " (contended)";
  return nullptr;
}

RunningMarker::RunningMarker(std::string path, std::string content, double interval)
    : path_(std::move(path)), content_(std::move(content)), interval_(interval) {
  thread_ = std::thread([this] { beat(); });
}

void RunningMarker::beat() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::duration<double>(interval_), [this] { return stop_; })) {
    // The marker's mtime is the heartbeat (never through a link someone put in its place).
    ::utimensat(AT_FDCWD, path_.c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
  }
}

RunningMarker::~RunningMarker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::string now;
  if (read_regular(path_, &now) && now == content_) ::unlink(path_.c_str());
}

void mark_failed(const std::string& output, const std::string& id, const std::string& why) {
  fs::create_directories(cell_dir(output));
  write_file_atomically(marker(output, id, "failed"), why + "\n");
}

void clear_failed(const std::string& output, const std::string& id) {
  ::unlink(marker(output, id, "failed").c_str());
}

}  // namespace rotq
