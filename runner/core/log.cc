#include "runner/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "solvers/error.h"

namespace rotq {

void init_logging(int rank, int size, const std::string& level, bool all_ranks) {
  // Logs go to stderr so that stdout carries only results (tables, JSON lines, generated text).
  spdlog::drop("rotq");
  auto logger = spdlog::stderr_color_mt("rotq");
  logger->set_pattern("[%H:%M:%S.%e] [r" + std::to_string(rank) + "/" + std::to_string(size) +
                      "] [%^%l%$] %v");
  spdlog::level::level_enum lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    fail("--log-level ", level, ": expected trace, debug, info, warn, error or off");
  }
  if (rank != 0 && !all_ranks && lvl < spdlog::level::warn) lvl = spdlog::level::warn;
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
}

}  // namespace rotq
