#!/usr/bin/env bash
# rotq's entry point on a fresh Debian machine. Every command first installs what is missing
# (scripts/deps.sh) and builds (CMake + Ninja, build/), so each is idempotent and cheap to repeat.
#
#   ./run.sh quickstart   a small sweep on the vendored stories260K, then its tables
#   ./run.sh test         all tests: GoogleTest suites and the multi-rank suites under mpirun
#   ./run.sh build        install + build only
#
# Environment: BUILD_DIR (default build), CMAKE_ARGS (extra configure flags, e.g.
# -DROTQ_WITH_CUDA=ON), CTEST_ARGS (extra ctest flags, e.g. "-R Tokenizer").
set -euo pipefail
cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}

# OpenMP's spin-wait makes 2-thread LibTorch runs ~30x slower when the cores are shared.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

build() {
  scripts/deps.sh
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    # shellcheck disable=SC2086
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
  fi
  cmake --build "$BUILD_DIR"
}

quickstart() {
  build
  # A small sweep (experiments/quickstart.yaml: NR/RH/DFRot x GPTQ W4 x A16/A4/A4KV4, 2 seeds,
  # and the nine zero-shot tasks at W4A4KV4), resumable, then its tables in the papers' layouts.
  "$BUILD_DIR/rotq" run experiments/quickstart.yaml
  "$BUILD_DIR/rotq" --log-level warn table experiments/quickstart.yaml
  "$BUILD_DIR/rotq" --log-level warn table experiments/quickstart.yaml --cols task --metric score
}

run_tests() {
  build
  # shellcheck disable=SC2086
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
}

case "${1:-}" in
  quickstart) quickstart ;;
  test) run_tests ;;
  build) build ;;
  *)
    echo "usage: ./run.sh quickstart|test|build" >&2
    exit 2
    ;;
esac
