// Child processes without a shell: argv goes to the program as it is (posix_spawnp), so no
// value (a file name, an experiment name, a Slurm option) is ever parsed as shell syntax.
#pragma once

#include <string>
#include <vector>

namespace rotq {

// `s` as one word for /bin/sh (single-quoted unless it is plainly safe).
std::string shell_quote(const std::string& s);

struct ProcessResult {
  int exit_code = -1;  // the exit status, or 128 + signal
  std::string output;  // stdout and stderr together, when captured
};

// Runs argv[0] (searched on PATH when it has no '/') with argv, waits for it. With
// `capture` its stdout and stderr are returned, otherwise they go to this process's.
// Throws rotq::Error when the program cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv, bool capture);

// `argv` as one shell-quoted line, for messages and --dry-run (never executed by a shell here).
std::string quoted_command(const std::vector<std::string>& argv);

}  // namespace rotq
