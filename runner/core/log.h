// Logging through spdlog: every line carries the rank; rank 0 speaks at the chosen level, the
// others only report warnings and errors unless --log-all-ranks.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace rotq {

void init_logging(int rank, int size, const std::string& level, bool all_ranks);

}  // namespace rotq
