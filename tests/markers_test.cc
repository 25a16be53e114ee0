// What is in flight and what is left behind: running markers tell a live runner from a dead one
// (same host: the process and its start time; another host: the heartbeat's age), `rotq run`
// skips live cells, takes over dead ones (a remote one only with --force-stale), never writes
// through a planted link, and cleans only its own temporaries; `rotq plot` writes CSV that reads
// back whatever a series is called.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "models/base/files.h"
#include "runner/record/cell_markers.h"
#include "runner/record/experiment.h"
#include "runner/record/results.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using rotq_test::run_command;

const std::string kRotq = ROTQ_BINARY;
const std::string kStories = rotq_test::project_data("stories260K/stories260K.bin");
const std::string kTok = rotq_test::project_data("stories260K/tok512.bin");
const std::string kText = rotq_test::project_data("tinystories_sample.txt");

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A one-cell experiment (a second with `seeds`) that runs in about a second.
std::string write_experiment(const rotq_test::TempDir& d, const std::string& seeds = "[0]") {
  const std::string path = d.str("exp.yaml");
  write_text(path, "name: markers\noutput: " + d.str("out.h5") + "\nmodels:\n  - {name: s, path: " +
                       kStories + ", tokenizer: " + kTok + "}\nseeds: " + seeds +
                       "\nevaluation: {ppl_texts: [" + kText + "], seqlen: 128, max_windows: 1}\n");
  return path;
}

std::string marker_path(const rotq_test::TempDir& d, const std::string& id) {
  return d.str("out.h5.d/" + id + ".running");
}

// A marker as another runner would leave it, with its heartbeat (mtime) `age_seconds` old.
void plant_marker(const std::string& path, const std::string& host, int64_t pid,
                  double age_seconds) {
  fs::create_directories(fs::path(path).parent_path());
  write_text(path,
             json{{"host", host}, {"pid", pid}, {"start", 0}, {"heartbeat_seconds", 30}}.dump());
  const auto when =
      fs::file_time_type::clock::now() - std::chrono::duration_cast<fs::file_time_type::duration>(
                                             std::chrono::duration<double>(age_seconds));
  fs::last_write_time(path, when);
}

// A pid that is certainly not running: a child that has exited and been reaped.
int64_t dead_pid() {
  const pid_t p = fork();
  if (p == 0) _exit(0);
  int st = 0;
  waitpid(p, &st, 0);
  return p;
}

std::string run_rotq(const std::string& args) {
  return run_command(kRotq + " --log-level warn " + args).output;
}

TEST(Markers, StatusTellsLiveFromDeadRunners) {
  rotq_test::TempDir d;
  const std::string out = d.str("out.h5"), id = "0123456789abcdef";
  const std::string m = marker_path(d, id);
  EXPECT_EQ(rotq::cell_status(out, id, false).state, rotq::CellState::kPending);
  EXPECT_EQ(rotq::cell_status(out, id, true).state, rotq::CellState::kDone);
  // This host, this (live) process.
  plant_marker(m, rotq::host_name(), getpid(), 0);
  EXPECT_EQ(rotq::cell_status(out, id, false).state, rotq::CellState::kRunning);
  // This host, a process that is gone: stale and certainly dead.
  plant_marker(m, rotq::host_name(), dead_pid(), 0);
  rotq::CellStatus s = rotq::cell_status(out, id, false);
  EXPECT_EQ(s.state, rotq::CellState::kStale);
  EXPECT_TRUE(s.certainly_dead);
  EXPECT_NE(s.detail.find("is gone"), std::string::npos) << s.detail;
  // This host, a live pid that started at another time (the pid was reused): dead.
  fs::create_directories(fs::path(m).parent_path());
  write_text(m, json{{"host", rotq::host_name()},
                     {"pid", getpid()},
                     {"pid_start", rotq::process_start_ticks(getpid()) + 12345},
                     {"heartbeat_seconds", 30}}
                    .dump());
  EXPECT_EQ(rotq::cell_status(out, id, false).state, rotq::CellState::kStale);
  // Another host: alive while its heartbeat is recent, stale (not certainly dead) after 10 beats.
  plant_marker(m, "elsewhere.example", 4242, 5);
  EXPECT_EQ(rotq::cell_status(out, id, false).state, rotq::CellState::kRunning);
  plant_marker(m, "elsewhere.example", 4242, 3 * 3600);
  s = rotq::cell_status(out, id, false);
  EXPECT_EQ(s.state, rotq::CellState::kStale);
  EXPECT_FALSE(s.certainly_dead);
  EXPECT_NE(s.detail.find("no heartbeat from elsewhere.example pid 4242 for 3.0 h"),
            std::string::npos)
      << s.detail;
  // Garbage, or a link, is not a runner.
  write_text(m, "not a marker");
  EXPECT_EQ(rotq::cell_status(out, id, false).state, rotq::CellState::kStale);
}

TEST(Markers, HeartbeatRefreshesTheMarker) {
  rotq_test::TempDir d;
  setenv("ROTQ_HEARTBEAT_SECONDS", "0.05", 1);
  std::string why;
  auto claim = rotq::RunningMarker::claim(d.str("out.h5"), "feedfacefeedface", false, &why);
  unsetenv("ROTQ_HEARTBEAT_SECONDS");
  ASSERT_TRUE(claim) << why;
  // Age the marker by an hour; the heartbeat thread must bring its mtime back to now.
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(claim->path(), old);
  bool refreshed = false;
  for (int i = 0; i < 2000 && !refreshed; ++i) {  // up to ~100 s on a loaded machine
    refreshed = fs::last_write_time(claim->path()) > old + std::chrono::minutes(30);
    if (!refreshed) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(refreshed);
  // A second claim on the same cell fails while the first holds it; releasing removes the marker.
  EXPECT_FALSE(rotq::RunningMarker::claim(d.str("out.h5"), "feedfacefeedface", true, &why));
  EXPECT_NE(why.find("running on"), std::string::npos) << why;
  const std::string path = claim->path();
  claim.reset();
  EXPECT_FALSE(fs::exists(path));
}

TEST(Markers, RunSkipsLiveCellsAndTakesOverDeadOnes) {
  rotq_test::TempDir d;
  const std::string exp = write_experiment(d);
  const std::string id = rotq::load_experiment(exp).cells.at(0).id;
  // A live runner elsewhere: skipped (not recomputed), status says who runs it.
  plant_marker(marker_path(d, id), "elsewhere.example", 4242, 1);
  std::string log = run_rotq("run " + exp);
  EXPECT_FALSE(fs::exists(d.str("out.h5.d/" + id + ".h5"))) << log;
  EXPECT_NE(log.find("skipped: running on elsewhere.example pid 4242"), std::string::npos) << log;
  EXPECT_NE(run_rotq("status " + exp).find("0 done, 1 running"), std::string::npos);
  // Its heartbeat stopped an hour ago: stale; run leaves it alone without --force-stale.
  plant_marker(marker_path(d, id), "elsewhere.example", 4242, 3600);
  const std::string status = run_rotq("status " + exp);
  EXPECT_NE(status.find("stale"), std::string::npos) << status;
  EXPECT_NE(status.find("0 done, 0 running, 0 failed, 0 pending, 1 stale"), std::string::npos)
      << status;
  log = run_rotq("run " + exp);
  EXPECT_FALSE(fs::exists(d.str("out.h5.d/" + id + ".h5"))) << log;
  EXPECT_NE(log.find("--force-stale"), std::string::npos) << log;
  // rotq submit sends it again (dry run: the cell is in the list).
  const std::string dry = run_rotq("submit " + exp + " --dry-run");
  EXPECT_NE(dry.find("# 1 cells: " + id), std::string::npos) << dry;
  EXPECT_NE(dry.find("--force-stale"), std::string::npos) << dry;
  // --force-stale takes it over.
  log = run_rotq("run " + exp + " --force-stale");
  EXPECT_TRUE(fs::exists(d.str("out.h5.d/" + id + ".h5"))) << log;
  EXPECT_FALSE(fs::exists(marker_path(d, id)));
  // A runner on this host that died is taken over without being asked.
  rotq_test::TempDir d2;
  const std::string exp2 = write_experiment(d2);
  const std::string id2 = rotq::load_experiment(exp2).cells.at(0).id;
  plant_marker(marker_path(d2, id2), rotq::host_name(), dead_pid(), 1);
  log = run_rotq("run " + exp2);
  EXPECT_TRUE(fs::exists(d2.str("out.h5.d/" + id2 + ".h5"))) << log;
}

// Under mpirun every rank follows rank 0's reading of the markers (rank 0 creates them as the
// ranks start; ranks that looked for themselves once disagreed and deadlocked).
TEST(Markers, RanksAgreeOnWhatRuns) {
  rotq_test::TempDir d;
  const std::string exp = write_experiment(d, "[0, 1, 2]");
  const auto cells = rotq::load_experiment(exp).cells;
  plant_marker(marker_path(d, cells[1].id), rotq::host_name(), dead_pid(), 1);  // taken over
  plant_marker(marker_path(d, cells[2].id), "elsewhere.example", 4242, 1);      // left alone
  const auto r = run_command(
      "OMPI_MCA_btl_vader_single_copy_mechanism=none timeout 300 mpirun "
      "--allow-run-as-root --oversubscribe -np 2 " +
      kRotq + " --log-level warn run " + exp);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(d.str("out.h5.d/" + cells[0].id + ".h5"))) << r.output;
  EXPECT_TRUE(fs::exists(d.str("out.h5.d/" + cells[1].id + ".h5"))) << r.output;
  EXPECT_FALSE(fs::exists(d.str("out.h5.d/" + cells[2].id + ".h5"))) << r.output;
}

TEST(Markers, NeverWritesThroughALinkAndCleansOnlyItsOwnTemporaries) {
  rotq_test::TempDir d;
  const std::string exp = write_experiment(d, "[0, 1]");
  const auto cells = rotq::load_experiment(exp).cells;
  // A link planted where the first cell's marker goes, pointing at a user's file.
  write_text(d.str("precious.txt"), "keep me\n");
  fs::create_directories(d.str("out.h5.d"));
  fs::create_symlink(d.str("precious.txt"), marker_path(d, cells[0].id));
  // Files beside the output named like a temporary of a dead writer, and a real one inside.
  const std::string host = rotq::host_name(), pid = std::to_string(dead_pid());
  write_text(d.str("out.h5.tmp." + host + "." + pid), "user data\n");
  write_text(d.str(".out.h5.rotq-tmp." + host + "." + pid + ".0"), "user data too\n");
  const std::string stale_tmp = d.str("out.h5.d/.x.h5.rotq-tmp." + host + "." + pid + ".3");
  write_text(stale_tmp, "a dead writer's partial file\n");
  const std::string live_tmp =
      d.str("out.h5.d/.y.h5.rotq-tmp." + host + "." + std::to_string(getpid()) + ".0");
  write_text(live_tmp, "a live writer's file\n");
  const std::string log = run_rotq("run " + exp);
  EXPECT_EQ(rotq::read_file_bytes(d.str("precious.txt")), "keep me\n") << log;
  EXPECT_TRUE(fs::is_symlink(marker_path(d, cells[0].id)) ||
              !fs::exists(marker_path(d, cells[0].id)));
  for (const auto& c : cells) EXPECT_TRUE(fs::exists(d.str("out.h5.d/" + c.id + ".h5"))) << log;
  EXPECT_TRUE(fs::exists(d.str("out.h5.tmp." + host + "." + pid)));
  EXPECT_TRUE(fs::exists(d.str(".out.h5.rotq-tmp." + host + "." + pid + ".0")));
  EXPECT_FALSE(fs::exists(stale_tmp));
  EXPECT_TRUE(fs::exists(live_tmp));
}

TEST(Markers, PlotCsvReadsBackWithCommasAndQuotes) {
  rotq_test::TempDir d;
  // Two cells whose series (the model's name) holds a comma, a quote and a newline.
  write_text(d.str("exp.yaml"), "name: csv\noutput: " + d.str("out.h5") +
                                    "\nmodels:\n  - {name: \"a, \\\"b\\\"\\nc\", path: " +
                                    kStories + ", tokenizer: " + kTok +
                                    "}\nseeds: [0]\nevaluation: "
                                    "{ppl_texts: [" +
                                    kText +
                                    "], seqlen: 128, max_windows: 1}\n"
                                    "sweep:\n  quantization.a_bits: [8, 16]\n");
  ASSERT_NE(run_rotq("run " + d.str("exp.yaml")).find(""), std::string::npos);
  const std::string plot =
      run_rotq("plot " + d.str("out.h5") + " --x quantization.a_bits --series model --out " +
               d.str("p.png"));
  ASSERT_TRUE(fs::exists(d.str("p.csv"))) << plot;
  // Python's csv module reads back the series name whole, and the numbers in their columns.
  const auto r = run_command(
      "/usr/bin/python3 -c 'import csv,sys; rows=list(csv.DictReader(open(sys.argv[1], "
      "newline=\"\"))); print(len(rows)); print(repr(rows[0][\"series\"])); "
      "print(sorted(r[\"x\"] for r in rows)); float(rows[0][\"mean\"])' " +
      d.str("p.csv"));
  EXPECT_EQ(r.status, 0) << r.output << rotq::read_file_bytes(d.str("p.csv"));
  EXPECT_NE(r.output.find("2\n'a, \"b\"\\nc'\n['16', '8']"), std::string::npos) << r.output;
}

}  // namespace
