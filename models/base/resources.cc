#include "models/base/resources.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "solvers/error.h"

namespace rotq {

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

uint64_t free_disk_bytes(const std::string& path) {
  std::filesystem::path p = std::filesystem::absolute(path);
  std::error_code ec;
  while (!std::filesystem::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) {
    p = p.parent_path();
  }
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return UINT64_MAX;  // unknown: do not refuse
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

std::string gib_text(double bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / 1073741824.0);
  return buf;
}

void require_memory(double bytes, const std::string& what, const std::string& hint) {
  const uint64_t have = physical_memory_bytes();
  require(have == 0 || bytes <= static_cast<double>(have), what, " needs ", gib_text(bytes),
          ", more than this machine's ", gib_text(static_cast<double>(have)), " of memory (", hint,
          ")");
}

void require_disk_space(const std::string& path, double bytes, const std::string& what) {
  const uint64_t free = free_disk_bytes(path);
  require(free == UINT64_MAX || bytes <= static_cast<double>(free), what, " needs ",
          gib_text(bytes), ", but the file system of ", path, " has ",
          gib_text(static_cast<double>(free)), " free");
}

}  // namespace rotq
