#include "models/base/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "solvers/error.h"

namespace rotq {
namespace {

constexpr std::string_view kTmpTag = ".rotq-tmp.";

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// `.NAME.rotq-tmp.HOST.PID.N`: unique within this process (N), and across processes and hosts.
std::string temporary_name(const std::string& dir, const std::string& name) {
  static std::atomic<uint64_t> counter{0};
  return dir + "/." + name + std::string(kTmpTag) + host_name() + "." + std::to_string(::getpid()) +
         "." + std::to_string(counter++);
}

// Opens a new temporary exclusively (never through a link, never an existing file).
int open_temporary(const std::string& tmp, const std::string& what) {
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  require(fd >= 0, what, ": cannot create the temporary ", tmp, " (", std::strerror(errno), ")");
  return fd;
}

// Writes all of `bytes`, then fsyncs and closes `fd`; any failure (ENOSPC, EDQUOT, EIO, EFBIG)
// throws naming `what`. The descriptor is closed in every case.
void write_all_and_close(int fd, std::string_view bytes, const std::string& what) {
  size_t done = 0;
  int err = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  require(err == 0, what, ": write failed after ", done, " of ", bytes.size(), " bytes (",
          std::strerror(err), ")");
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// HOST.PID.N after the tag, or false.
bool parse_temporary(std::string_view name, std::string* host, int64_t* pid) {
  if (name.empty() || name[0] != '.') return false;
  const size_t at = name.rfind(kTmpTag);
  if (at == std::string_view::npos || at < 2) return false;
  std::string_view rest = name.substr(at + kTmpTag.size());
  const size_t last = rest.rfind('.');
  if (last == std::string_view::npos) return false;
  const size_t mid = rest.rfind('.', last - 1);
  if (mid == std::string_view::npos || last == 0) return false;
  const std::string_view pid_text = rest.substr(mid + 1, last - mid - 1);
  const std::string_view n_text = rest.substr(last + 1);
  const auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string::npos;
  };
  if (!digits(pid_text) || !digits(n_text) || mid == 0) return false;
  *host = std::string(rest.substr(0, mid));
  *pid = std::stoll(std::string(pid_text));
  return true;
}

}  // namespace

void require_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    require(errno != ENOENT && errno != ENOTDIR, path, ": no such file");
    fail(path, ": cannot read (", std::strerror(errno), ")");
  }
  require(!S_ISDIR(st.st_mode), path, ": is a directory, expected a file");
  require(S_ISREG(st.st_mode), path,
          ": is not a regular file (a device, pipe or socket), expected a file");
}

std::string read_file_bytes(const std::string& path) {
  require_regular_file(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  require(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      fail(path, ": read failed (", std::strerror(err), ")");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string host_name() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

uint64_t process_start_ticks(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return 0;
  std::string line;
  std::getline(in, line);
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  for (int i = 3; i < 22 && rest >> field; ++i) {
  }
  uint64_t start = 0;
  rest >> start;
  return start;
}

bool process_alive(int64_t pid, uint64_t start_ticks) {
  if (pid <= 0 || pid > INT32_MAX) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  if (start_ticks == 0) return true;
  const uint64_t now = process_start_ticks(pid);
  return now == 0 || now == start_ticks;
}

AtomicFileWriter::AtomicFileWriter(std::string path, const std::string& tmp_dir)
    : path_(std::move(path)),
      tmp_(temporary_name(tmp_dir.empty() ? dir_of(path_) : tmp_dir, base_of(path_))),
      fd_(open_temporary(tmp_, path_)) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(std::string_view bytes) {
  require(fd_ >= 0, path_, ": write after commit");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      fail(path_, ": write failed after ", written_ + done, " bytes (", std::strerror(err), ")");
    }
    done += static_cast<size_t>(n);
  }
  written_ += done;
}

void AtomicFileWriter::commit() {
  require(fd_ >= 0, path_, ": committed twice");
  const int fd = fd_;
  fd_ = -1;
  int err = ::fsync(fd) != 0 ? errno : 0;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && std::rename(tmp_.c_str(), path_.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp_.c_str());
    fail(path_, ": cannot store the file (", std::strerror(err), ")");
  }
  fsync_dir(dir_of(path_));
}

void write_file_atomically(const std::string& path, std::string_view bytes,
                           const std::string& tmp_dir) {
  AtomicFileWriter w(path, tmp_dir);
  w.write(bytes);
  w.commit();
}

bool create_file_exclusively(const std::string& path, std::string_view bytes) {
  const std::string tmp = temporary_name(dir_of(path), base_of(path));
  const int fd = open_temporary(tmp, path);
  try {
    write_all_and_close(fd, bytes, path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // link() never replaces and never follows an existing name: the marker appears whole, once.
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  ::unlink(tmp.c_str());
  if (rc == 0) {
    fsync_dir(dir_of(path));
    return true;
  }
  require(err == EEXIST, path, ": cannot create (", std::strerror(err), ")");
  return false;
}

bool is_rotq_temporary(std::string_view name) {
  std::string host;
  int64_t pid = 0;
  return parse_temporary(name, &host, &pid);
}

int remove_stale_temporaries_in(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  const std::string me = host_name();
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    std::string host;
    int64_t pid = 0;
    if (!parse_temporary(e->d_name, &host, &pid) || host != me || process_alive(pid, 0)) continue;
    struct stat st {};
    const std::string p = dir + "/" + e->d_name;
    if (::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) stale.push_back(p);
  }
  ::closedir(d);
  int removed = 0;
  for (const std::string& p : stale) removed += ::unlink(p.c_str()) == 0;
  return removed;
}

}  // namespace rotq
