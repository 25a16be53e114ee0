// rotq hadamard --check N...: builds the dense Hadamard matrix of each order N and measures
// max|H·Hᵀ/N − I| in float64, so the constructions behind the online rotations can be verified
// on this machine for the exact sizes a model needs.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "runner/cli/cmd_common.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"

namespace rotq {
namespace {

struct HadamardArgs {
  std::vector<int64_t> check;
  bool dense = false;
  bool json = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct CheckResult {
  bool entries_pm1 = true;
  double max_dev = 0;
};

// max|H·Hᵀ/n − I| (and whether every entry is ±1) over row blocks of ~16 MiB, so temporaries stay
// small and are reused (fresh pages cost ~15-25 us each here). The products are exact (integers <
// 2^53 in float64): a correct matrix gives exactly 0. By default Hᵀ is applied through its
// Kronecker structure (hadamard_transform_unnormalized: n²·(m + log2 pow2) multiply-adds,
// bit-identical to the dense product on integers); --dense uses GEMMs (2n³ flops: 52 TFLOP at n =
// 29568).
CheckResult check_matrix(const at::Tensor& H, bool dense) {
  const int64_t n = H.size(0);
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{16} << 20) / (8 * n)));
  const at::Tensor Ht = H.t();
  CheckResult r;
  for (int64_t r0 = 0; r0 < n; r0 += block) {
    const int64_t rb = std::min(block, n - r0);
    const at::Tensor rows = H.narrow(0, r0, rb);
    r.entries_pm1 = r.entries_pm1 && rows.eq(1).logical_or_(rows.eq(-1)).all().item<bool>();
    at::Tensor G = dense ? at::mm(rows, Ht) : hadamard_transform_unnormalized(rows);
    G.div_(static_cast<double>(n));
    G.narrow(1, r0, rb).diagonal().sub_(1.0);
    r.max_dev = std::max(r.max_dev, G.abs_().max().item<double>());
  }
  return r;
}

void run_hadamard(Runtime& rt, const HadamardArgs& a) {
  rt.init();
  // Every order is validated before the first (possibly large) matrix is built.
  std::vector<HadamardPlan> plans;
  for (int64_t n : a.check) plans.push_back(hadamard_plan(n));
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> failures;
  for (const HadamardPlan& p : plans) {
    const double gib = static_cast<double>(p.n) * p.n * 8 / 1073741824.0;
    spdlog::info("hadamard {}: {}, dense float64 matrix {:.2f} GiB", p.n, p.construction, gib);
    const auto t0 = std::chrono::steady_clock::now();
    const at::Tensor H = hadamard_matrix(p.n);
    const double build_s = seconds_since(t0);
    const auto t1 = std::chrono::steady_clock::now();
    const CheckResult c = check_matrix(H, a.dense);
    const double check_s = seconds_since(t1);
    const bool pm1 = c.entries_pm1;
    const double dev = c.max_dev;
    spdlog::info("hadamard {}: built in {:.3f} s, checked in {:.3f} s", p.n, build_s, check_s);
    const double total_s = build_s + check_s;
    if (!pm1 || dev != 0.0) {
      failures.push_back(std::to_string(p.n) + (pm1 ? "" : " (entries not ±1)") +
                         " (max deviation " + std::to_string(dev) + ")");
    }
    if (a.json) {
      print_json_line(rt.c(), {{"command", "hadamard"},
                               {"n", p.n},
                               {"m", p.m},
                               {"pow2", p.pow2},
                               {"construction", p.construction},
                               {"entries_pm1", pm1},
                               {"max_dev", dev},
                               {"product", a.dense ? "dense" : "structured"},
                               {"build_seconds", build_s},
                               {"check_seconds", check_s},
                               {"seconds", total_s}});
    } else {
      char dev_s[32];
      std::snprintf(dev_s, sizeof dev_s, "%.3g", dev);
      rows.push_back({std::to_string(p.n), std::to_string(p.m), std::to_string(p.pow2),
                      p.construction, dev_s, fmt_double(total_s, 3)});
    }
  }
  if (!a.json) {
    print_table(rt.c(), {"n", "m", "pow2", "construction", "max|HH^T/n - I|", "seconds"}, rows);
  }
  if (!failures.empty()) {
    std::string list;
    for (const auto& f : failures) list += (list.empty() ? "" : ", ") + f;
    fail("hadamard --check: H·Hᵀ != n·I for n = ", list);
  }
}

}  // namespace

void register_hadamard(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<HadamardArgs>();
  CLI::App* cmd = app.add_subcommand(
      "hadamard", "build exact Hadamard matrices and check H·Hᵀ = n·I (float64, exact)");
  cmd->add_option("--check", a->check,
                  "order N to build and check (repeatable); the dense matrix takes 8·N² bytes")
      ->required()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_flag("--dense", a->dense,
                "form H·Hᵀ with dense GEMMs instead of H's Kronecker structure (2N³ flops)");
  cmd->add_flag("--json", a->json, "print one JSON object per order");
  cmd->callback([a, &rt] { run_hadamard(rt, *a); });
}

}  // namespace rotq
