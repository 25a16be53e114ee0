// Reading and writing whole files with one clear error each. Reads name what is wrong with the
// path (missing, a directory, a device) instead of a stream's "underflow". Writes appear whole or
// not at all, through temporaries that can be told apart from a user's files. A temporary is
// created exclusively (O_EXCL | O_NOFOLLOW: never through a link someone planted, never over an
// existing file) in a directory rotq owns, named
// `.NAME.rotq-tmp.HOST.PID.N`, written with every write's error checked (a full disk is one clear
// error, not a torn file), fsynced and renamed into place. remove_stale_temporaries deletes only
// such names whose writer is gone.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rotq {

// The whole content of the regular file `path`; rotq::Error "PATH: no such file", "PATH: is a
// directory, expected a file", "PATH: is not a regular file ..." or the read's cause otherwise.
std::string read_file_bytes(const std::string& path);
// Throws the same errors as read_file_bytes when `path` is not a readable regular file.
void require_regular_file(const std::string& path);

// A file written in pieces that appears whole at `path` on commit(), or not at all: an exclusive
// temporary beside it (or in `tmp_dir`), every write checked (rotq::Error naming `path` and the
// cause, e.g. "No space left on device"), fsync and rename on commit; destroyed uncommitted, the
// temporary is removed.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path, const std::string& tmp_dir = "");
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(std::string_view bytes);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// Writes `bytes` to `path` atomically through a temporary in `tmp_dir` (default: path's
// directory; it must be on the same filesystem). Throws rotq::Error naming `path` and the cause
// (e.g. "No space left on device"); on failure the temporary is removed and `path` is untouched.
void write_file_atomically(const std::string& path, std::string_view bytes,
                           const std::string& tmp_dir = "");

// Creates `path` exclusively with `bytes` as its whole content (a marker): returns false when
// `path` already exists (as anything, a link included), throws rotq::Error for other failures.
// Readers never see a partial content (written to a temporary first, then hard-linked).
bool create_file_exclusively(const std::string& path, std::string_view bytes);

// Removes, in `dir` only, temporaries made by write_file_atomically / create_file_exclusively on
// this host whose process no longer exists. Returns how many were removed.
int remove_stale_temporaries_in(const std::string& dir);

// Whether `name` (a file name, no directory) has the shape of one of rotq's temporaries.
bool is_rotq_temporary(std::string_view name);

// This machine's host name (markers, temporaries and records name it).
std::string host_name();

// Whether process `pid` on this host is alive and is the process that started at `start_ticks`
// (field 22 of /proc/PID/stat; 0: do not compare), so that a reused pid does not look alive.
bool process_alive(int64_t pid, uint64_t start_ticks);
// This process's start time in clock ticks since boot (0 when /proc is not available).
uint64_t process_start_ticks(int64_t pid);

}  // namespace rotq
