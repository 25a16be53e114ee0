// What is in flight: OUTPUT.d/<id>.running says which process runs cell <id> (host, pid and that
// pid's start time, the run's start and its heartbeat interval) and its modification time is the
// heartbeat, refreshed by a thread of the runner. A reader tells a live runner from a dead one:
// on the same host by the process itself (a reused pid does not pass for the runner), on another
// host by the heartbeat's age. OUTPUT.d/<id>.failed holds the last failure's message.
//
// Markers are created exclusively (a hard link of a complete temporary: never through a planted
// link, never over another runner's marker) and removed only by the runner that owns them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace rotq {

enum class CellState { kPending, kRunning, kStale, kDone, kFailed };
const char* state_name(CellState s);

struct CellStatus {
  CellState state = CellState::kPending;
  // kStale: whether the runner is certainly gone (its pid on this host is dead), as opposed to a
  // runner on another host whose heartbeat stopped (maybe a stalled file system).
  bool certainly_dead = false;
  std::string detail;  // failure message, or who runs it and the heartbeat's age
};

// What the markers say about cell `id` (`done`: a result exists).
CellStatus cell_status(const std::string& output, const std::string& id, bool done);

// The heartbeat interval new markers record: ROTQ_HEARTBEAT_SECONDS, else 30 s. A marker whose
// heartbeat is older than kStaleHeartbeats intervals reads as stale.
double heartbeat_interval_seconds();
constexpr double kStaleHeartbeats = 10;

// A claim on one cell, held while it runs: the marker plus its heartbeat thread. Destroying it
// stops the heartbeat and removes the marker if it is still this process's.
class RunningMarker {
 public:
  // Claims cell `id`. Returns null (and says why in *why_not) when a live runner holds it, or a
  // stale one on another host and !take_over_stale. A certainly dead runner's marker is taken over.
  static std::unique_ptr<RunningMarker> claim(const std::string& output, const std::string& id,
                                              bool take_over_stale, std::string* why_not);
  ~RunningMarker();
  RunningMarker(const RunningMarker&) = delete;
  RunningMarker& operator=(const RunningMarker&) = delete;
  const std::string& path() const { return path_; }

 private:
  RunningMarker(std::string path, std::string content, double interval);
  void beat();

  std::string path_, content_;
  double interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Records a failure of cell `id` (replacing an earlier .failed; never through a link).
void mark_failed(const std::string& output, const std::string& id, const std::string& why);
// Removes the cell's .failed marker (after a success).
void clear_failed(const std::string& output, const std::string& id);

}  // namespace rotq
