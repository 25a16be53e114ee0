// The ATen-only kernel paths that tensors on a GPU take (solvers/kernel_path.h), checked on CPU
// against the hand-written host loops: the Hadamard butterfly, the quantizer's per-row parameters
// and MSE clip search, and GPTQ's column loop. The GPU then only changes where the same ATen ops
// run. Tolerances: float64 1e-12 (transform) and 1e-9 (GPTQ, as its float64 reference test);
// quantizer parameters are compared exactly (same operations in the same type).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "solvers/blas.h"
#include "solvers/gemm_accumulate_cuda.h"
#include "solvers/gptq.h"
#include "solvers/gptq_kernel.h"
#include "solvers/gptq_row.h"
#include "solvers/hadamard.h"
#include "solvers/kernel_path.h"
#include "solvers/optrot.h"
#include "solvers/quantizer.h"
#include "tests/gptq_cases.h"

namespace rotq {
namespace {

// Runs fn once on the host loops and once on the ATen-only path.
template <typename Fn>
std::pair<at::Tensor, at::Tensor> both_paths(const Fn& fn) {
  force_aten_kernels(false);
  at::Tensor host = fn();
  force_aten_kernels(true);
  at::Tensor aten;
  try {
    aten = fn();
  } catch (...) {
    force_aten_kernels(false);
    throw;
  }
  force_aten_kernels(false);
  return {host, aten};
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

QuantSpec spec(int bits, bool sym, int64_t group = 0, bool mse = false, double clip = 1.0) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = sym;
  s.group = group;
  s.mse_clip = mse;
  s.clip_ratio = clip;
  return s;
}

TEST(AtenPath, HadamardTransformMatchesButterfly) {
  // Pure powers of two (odd and even exponent: the a x b split), cores alone and Kronecker sizes
  // of the models (head_dim 128, LLaMA-2-7B's 11008 = 172·64, 4096).
  for (int64_t n : {2, 8, 32, 12, 20, 172, 688, 128, 4096, 11008}) {
    at::manual_seed(n);
    const at::Tensor x = at::randn({3, 5, n}, at::kDouble);
    auto [host, aten] = both_paths([&] { return hadamard_transform(x); });
    EXPECT_LT(max_abs_diff(host, aten), 1e-12) << "n = " << n;
    const at::Tensor xf = x.to(at::kFloat);
    auto [hf, af] = both_paths([&] { return hadamard_transform(xf); });
    EXPECT_EQ(af.scalar_type(), at::kFloat);
    EXPECT_LT(max_abs_diff(hf, af), 1e-5) << "float32, n = " << n;
    auto [hu, au] = both_paths([&] { return hadamard_transform_unnormalized(x); });
    EXPECT_LT(max_abs_diff(hu, au), 1e-9) << "unnormalized, n = " << n;
  }
  // Strided bf16 input, rounded back to bf16.
  const at::Tensor xb = at::randn({4, 64, 6}, at::kFloat).transpose(1, 2).to(at::kBFloat16);
  auto [hb, ab] = both_paths([&] { return hadamard_transform(xb); });
  EXPECT_EQ(ab.scalar_type(), at::kBFloat16);
  EXPECT_LT(max_abs_diff(hb, ab), 2e-2);
}

TEST(AtenPath, ActivationQuantizerMatchesHostLoops) {
  at::manual_seed(3);
  at::Tensor x = at::randn({6, 7, 64}, at::kFloat);
  x[0].zero_();                   // an all-zero row
  x[1].select(0, 2).fill_(0.75);  // a constant row (constant groups too)
  for (const QuantSpec& s : {spec(4, true), spec(4, false), spec(8, true, 0, false, 0.9),
                             spec(3, false, 16), spec(4, true, 32, false, 0.95)}) {
    auto [host, aten] = both_paths([&] { return fake_quantize(x, s); });
    EXPECT_TRUE(at::equal(host, aten)) << s.describe();
  }
}

// The CUDA kernel's row program (gptq_row.h, one thread per row) against the host kernel on one
// block, both as the kernel runs it on global memory (column stride = rows) and staged in a
// shared-memory-like tile (stride = threads per CTA). Same operations in the same order and type:
// equal to rounding (tolerance 1e-6 float32, 1e-13 float64, relative to the weights' scale 1).
template <typename T>
void check_row_program(bool symmetric, bool shared_params, bool staged) {
  const at::ScalarType dt = std::is_same_v<T, float> ? at::kFloat : at::kDouble;
  const int64_t rows = 37, cols = 20, i1 = 3, i2 = 17, count = i2 - i1, threads = 8;
  at::manual_seed(11);
  const at::Tensor wt0 = at::randn({cols, rows}, dt);
  at::Tensor u = at::randn({cols, cols}, dt).triu().mul_(0.2);
  u.diagonal().copy_(at::rand({cols}, dt).add_(0.5));
  const at::Tensor scale = at::rand({count, rows}, dt).add_(0.1).mul_(0.3);
  const at::Tensor zero = at::randint(0, 15, {count, rows}, dt);
  const QuantSpec s = spec(4, symmetric);
  const int64_t p_of = shared_params ? 0 : 1;  // which params row column k reads: 0 or k

  at::Tensor host = wt0.clone(), host_err = at::zeros({count, rows}, dt);
  detail::GptqBlock<T> b;
  b.wt = host.data_ptr<T>();
  b.ld = rows;
  b.err = host_err.data_ptr<T>();
  b.u = u.data_ptr<T>();
  b.u_ld = cols;
  b.i1 = i1;
  b.i2 = i2;
  b.symmetric = symmetric;
  b.minq = static_cast<T>(detail::min_level(s));
  b.maxq = static_cast<T>(detail::max_level(s));
  std::vector<T> d;
  for (int64_t k = 0; k < count; ++k) {
    d.push_back(u[i1 + k][i1 + k].item<T>());
    b.d.push_back(d.back());
    b.scale.push_back(scale.data_ptr<T>() + k * p_of * rows);
    b.zero.push_back(zero.data_ptr<T>() + k * p_of * rows);
  }
  detail::gptq_block(b);

  at::Tensor dev = wt0.clone(), dev_err = at::zeros({count, rows}, dt);
  detail::GptqRowShared<T> sh;
  sh.count = count;
  sh.u = u.data_ptr<T>() + i1 * cols + i1;
  sh.u_ld = cols;
  sh.d = d.data();
  sh.symmetric = symmetric;
  sh.minq = b.minq;
  sh.maxq = b.maxq;
  std::vector<T> tile(count * threads);
  for (int64_t r = 0; r < rows; ++r) {
    T* col = dev.data_ptr<T>() + i1 * rows + r;
    T* e = dev_err.data_ptr<T>() + r;
    const T* sr = scale.data_ptr<T>() + r;
    const T* zr = zero.data_ptr<T>() + r;
    if (!staged) {
      detail::gptq_row(col, rows, e, rows, sr, zr, p_of * rows, sh);
      continue;
    }
    T* t = tile.data() + r % threads;
    for (int64_t k = 0; k < count; ++k) t[k * threads] = col[k * rows];
    detail::gptq_row(t, threads, e, rows, sr, zr, p_of * rows, sh);
    for (int64_t k = 0; k < count; ++k) col[k * rows] = t[k * threads];
  }
  const double tol = dt == at::kFloat ? 1e-6 : 1e-13;
  const std::string what = std::string(c10::toString(dt)) + (symmetric ? " sym" : " asym") +
                           (shared_params ? " shared params" : " per-column params") +
                           (staged ? " staged" : " global");
  EXPECT_LT(max_abs_diff(host, dev), tol) << what;
  EXPECT_LT(max_abs_diff(host_err, dev_err), tol) << what;
  EXPECT_TRUE(at::equal(host.narrow(0, 0, i1), wt0.narrow(0, 0, i1))) << what;
  // The block's columns were quantized: on the grid of their params.
  EXPECT_GT(max_abs_diff(host.narrow(0, i1, count), wt0.narrow(0, i1, count)), 0.01) << what;
}

TEST(AtenPath, GptqCudaRowProgramMatchesHostKernel) {
  for (bool sym : {true, false})
    for (bool shared : {true, false})
      for (bool staged : {true, false}) {
        check_row_program<float>(sym, shared, staged);
        check_row_program<double>(sym, shared, staged);
      }
}

// GPTQ's MSE criterion Σ |Q(x) − x|^2.4 of one row at (scale, zero), in float64.
double mse_error64(const at::Tensor& row, double scale, double zero, const QuantSpec& s) {
  QuantSpec one = s;
  one.mse_clip = false;
  const at::Tensor x = row.to(at::kDouble).reshape({1, -1});
  at::Tensor q = at::empty_like(x);
  detail::quant_dequant_out(q, x, at::full({1, 1}, scale, at::kDouble),
                            at::full({1, 1}, zero, at::kDouble), one);
  return (q - x).abs().pow(2.4).sum().item<double>();
}

TEST(AtenPath, WeightQuantizerAndMseSearchMatchHostLoops) {
  at::manual_seed(4);
  for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
    at::Tensor w = at::randn({40, 96}, dt) * at::rand({40, 1}, dt);
    w[3].zero_();
    for (const QuantSpec& s :
         {spec(4, true), spec(3, false), spec(4, true, 32), spec(4, true, 0, true),
          spec(3, false, 0, true), spec(2, false, 32, true)}) {
      const at::Tensor rows = w.reshape({-1, s.group > 0 ? s.group : w.size(1)}).contiguous();
      auto [hs, as] = both_paths([&] { return find_quant_params(rows, s).scale; });
      auto [hz, az] = both_paths([&] { return find_quant_params(rows, s).zero; });
      if (!s.mse_clip) {
        EXPECT_TRUE(at::equal(hs, as) && at::equal(hz, az)) << s.describe();
        continue;
      }
      // The MSE search sums |e|^2.4 per row with different pow implementations and summation
      // orders on the two paths, so a row may pick another grid point only where the two tie:
      // within 1e-6 relative in float64.
      for (int64_t r = 0; r < rows.size(0); ++r) {
        if (hs[r].item<double>() == as[r].item<double>()) continue;
        const double eh = mse_error64(rows[r], hs[r].item<double>(), hz[r].item<double>(), s);
        const double ea = mse_error64(rows[r], as[r].item<double>(), az[r].item<double>(), s);
        EXPECT_LT(std::abs(eh - ea), 1e-6 * std::max(eh, ea))
            << s.describe() << " " << c10::toString(dt) << " row " << r << ": " << eh << " vs "
            << ea;
      }
    }
  }
}

using rotq_test::GptqCase;

TEST(AtenPath, GptqColumnLoopMatchesHostLoop) {
  at::manual_seed(5);
  const int64_t cols = 48;
  const at::Tensor basis = at::randn({cols, cols}, at::kDouble);
  const at::Tensor x = at::matmul(at::randn({256, cols}, at::kDouble), basis);
  at::Tensor h = at::matmul(x.t(), x) * (2.0 / 256);
  h[5].zero_();
  h.select(1, 5).zero_();  // a dead input column
  const at::Tensor w = at::randn({20, cols}, at::kDouble);
  const std::vector<GptqCase> cases = {
      {spec(4, true), false, false, 128},        {spec(3, false), true, false, 7},
      {spec(4, true, 0, true), true, false, 16}, {spec(4, false, 16), false, false, 5},
      {spec(3, true, 16), true, true, 128},      {spec(4, false, 8, true), true, false, 12}};
  for (const GptqCase& c : cases) {
    const GptqOptions o = rotq_test::options(c);
    for (at::ScalarType dt : {at::kDouble, at::kFloat}) {
      auto [host, aten] =
          both_paths([&] { return gptq_quantize(w.to(dt), h, c.spec, o, "t").weight; });
      const double tol = dt == at::kDouble ? 1e-9 : 1e-5;
      EXPECT_LT(max_abs_diff(host, aten), tol)
          << rotq_test::describe(c) << " " << c10::toString(dt);
    }
  }
}

// On a GPU (CUDA builds): the fused block kernel against the ATen column loop on the same device
// and against the host, for the cases of the test above. Float64: 1e-9 as that test; float32:
// the host's roundings (no FMA on either side), but the Cholesky factors come from different
// libraries, so a rounding tie may flip: the share of weights a grid step apart is bounded instead.
TEST(AtenPath, GptqCudaKernelMatchesAtenLoopOnGpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine";
  at::manual_seed(6);
  const int64_t cols = 256, rows = 300;
  const at::Tensor x = at::randn({1024, cols}, at::kDouble);
  const at::Tensor h = at::matmul(x.t(), x) * (2.0 / 1024);
  const at::Tensor w = at::randn({rows, cols}, at::kDouble);
  const std::vector<GptqCase> cases = {
      {spec(4, true), false, false, 128},
      {spec(3, false), true, false, 64},
      {spec(4, true, 0, true), true, false, 128},
      {spec(4, false, 64), false, false, 128},
      {spec(3, true, 32), true, true, 128},
      {spec(4, true), false, false, 256}};  // staged in float32, global in float64
  for (const GptqCase& c : cases) {
    const GptqOptions o = rotq_test::options(c);
    for (at::ScalarType dt : {at::kDouble, at::kFloat}) {
      const at::Tensor wd = w.to(dt).cuda();
      const at::Tensor hd = h.cuda();
      auto [fused, aten] = both_paths([&] { return gptq_quantize(wd, hd, c.spec, o, "t").weight; });
      const at::Tensor host = gptq_quantize(w.to(dt), h, c.spec, o, "t").weight;
      const std::string what = rotq_test::describe(c) + " " + c10::toString(dt);
      if (dt == at::kDouble) {
        EXPECT_LT(max_abs_diff(fused.cpu(), aten.cpu()), 1e-9) << what;
        EXPECT_LT(max_abs_diff(fused.cpu(), host), 1e-9) << what;
      } else {
        const double apart =
            (fused.cpu() - aten.cpu()).abs().gt(1e-4).to(at::kDouble).mean().item<double>();
        EXPECT_LT(apart, 0.02) << what;
      }
    }
  }
}

// ‖x − y‖ / ‖y‖ (Frobenius).
double relative_distance(const at::Tensor& x, const at::Tensor& y) {
  return ((x - y).norm() / y.norm()).item<double>();
}

// The arguments gemm_accumulate_cuda.cu gives cuBLAS (accumulate_gemm: acc ← α·aᵀ·y + β·acc as a
// column-major GEMM), run through the CPU BLAS's sgemm, whose argument convention cuBLAS shares:
// for a row-major a, a column-major one (a writer's reader form: a transposed view), and each
// with a leading dimension beyond its extent (a view into a wider matrix), against ATen's
// product in float32 (1e-5 relative: the same sums in another order).
TEST(AtenPath, AccumulatingGemmArgumentsComputeTheProductPlusTheSum) {
  using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                         const float*, const int*, const float*, const int*, const float*, float*,
                         const int*);
  const auto sgemm = blas_symbol<Sgemm>("sgemm_");
  if (sgemm == nullptr) GTEST_SKIP() << "the loaded BLAS has no sgemm_";
  at::manual_seed(12);
  const int64_t m = 37, c = 12;
  const at::Tensor y = at::randn({m, c});
  const at::Tensor wide = at::randn({m, c + 5});
  const at::Tensor tall = at::randn({c, m + 3});
  const std::vector<at::Tensor> forms = {at::randn({m, c}), wide.narrow(1, 0, c),
                                         at::randn({c, m}).t(), tall.narrow(1, 0, m).t()};
  for (const at::Tensor& a : forms) {
    const bool columns = a.stride(0) == 1;
    const detail::AccumulateGemm g =
        detail::accumulate_gemm(columns, columns ? a.stride(1) : a.stride(0), m, c);
    at::Tensor acc = at::randn({c, c});
    const at::Tensor want = acc + 0.7 * at::matmul(a.t(), y);
    const float alpha = 0.7f, beta = 1.0f;
    const int mi = static_cast<int>(g.m), ni = static_cast<int>(g.n), ki = static_cast<int>(g.k);
    const int lda = static_cast<int>(g.lda), ldb = static_cast<int>(g.ldb);
    const int ldc = static_cast<int>(g.ldc);
    sgemm("N", g.transpose_b ? "T" : "N", &mi, &ni, &ki, &alpha, y.data_ptr<float>(), &lda,
          a.data_ptr<float>(), &ldb, &beta, acc.data_ptr<float>(), &ldc);
    EXPECT_LT(relative_distance(acc, want), 1e-5) << "strides " << a.strides();
  }
}

// OptRot's bfloat16 gradient on the GPU (tensor cores where bf16_products_on_tensor_cores(), the
// cube rounded by cube_cuda.cu) against the CPU's emulation (float32 products of the same bfloat16
// values). Not the same sums up to their order alone: the float32 AR differs in its last bits
// between the two (the tensor cores' accumulation order and rounding), and where that moves a
// cube across a bfloat16 rounding boundary the cube moves by a bfloat16 ulp (2⁻⁸ relative). An
// H200 measured 4.9e-5 relative on the gradient (a float64-ordered AR instead of the CPU's float32
// GEMM gives 6e-6 on this case); the bound is 2e-4, and the rounding's own effect (the gap to the
// float32 gradient of the same A, 2.3e-3 here) must be ten times the GPU's distance, so that the
// comparison can tell a bfloat16 gradient from a float32 one. rotq's own GPU route (the cube
// kernel, and the products summed into the float32 run inside cuBLAS's GEMMs) against ATen's
// (force_aten_kernels: pow and a conversion, each product written and then added): the same
// cubes, the same float32 products summed in another order and rounding (the GEMM's epilogue, and
// cuBLAS may pick another algorithm when it accumulates), so the same gradient to 2e-6 relative; a
// cube kernel that rounded any other way than to nearest-even would move half the cubes, ~1e-3.
// Ten terms: a float32 run of eight and a second run, and terms stored transposed (writers'
// reader forms) take cuBLAS's other operand layout.
TEST(AtenPath, OptRotBfloat16GradientOnGpuMatchesTheEmulation) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine";
  std::printf("bf16 products on tensor cores: %s\n",
              bf16_products_on_tensor_cores() ? "yes" : "no");
  at::manual_seed(7);
  const int64_t c = 512;
  const at::Tensor r = std::get<0>(at::linalg_qr(at::randn({c, c}, at::kDouble)));
  FourthPowerObjective cpu(c, OptRotNorm::kNumel), gpu(c, OptRotNorm::kNumel);
  for (int k = 0; k < 10; ++k) {
    const int64_t rows = k % 2 == 0 ? 256 : 1376;
    at::Tensor a = at::randn({rows, c}).to(at::kBFloat16);
    if (k % 3 == 2) a = a.t().contiguous().t();
    cpu.add(a);
    gpu.add(a.cuda());
  }
  double loss_cpu = 0, loss_gpu = 0, loss_aten = 0;
  const at::Tensor g_cpu = cpu.local_gradient(r, &loss_cpu, true, at::kBFloat16);
  const at::Tensor g32 = cpu.local_gradient(r, nullptr, true, at::kFloat);
  const at::Tensor g_gpu = gpu.local_gradient(r.cuda(), &loss_gpu, true, at::kBFloat16).cpu();
  force_aten_kernels(true);
  const at::Tensor g_aten = gpu.local_gradient(r.cuda(), &loss_aten, true, at::kBFloat16).cpu();
  force_aten_kernels(false);
  std::printf("bf16 gradient, GPU vs CPU emulation %.3g, emulation vs float32 %.3g\n",
              relative_distance(g_gpu, g_cpu), relative_distance(g_cpu, g32));
  EXPECT_NEAR(loss_gpu / loss_cpu, 1.0, 2e-4);
  EXPECT_LT(relative_distance(g_gpu, g_cpu), 2e-4);
  EXPECT_GT(relative_distance(g_cpu, g32), 10 * relative_distance(g_gpu, g_cpu));
  std::printf("bf16 gradient, rotq's GPU route vs ATen's %.3g (loss %.3g)\n",
              relative_distance(g_gpu, g_aten), std::abs(loss_gpu / loss_aten - 1));
  EXPECT_LT(relative_distance(g_gpu, g_aten), 2e-6);
  EXPECT_NEAR(loss_gpu / loss_aten, 1.0, 2e-6);
}

// A stack on the GPU (R2's heads: one GEMM over all slices, a batched GEMM back, OptRot+ groups)
// is its slices added one by one: in float64 to rounding (1e-12), in bfloat16 within the CPU
// emulation's 2e-4 (the flattened GEMM may sum each A·R in another order than one slice's, and a
// cube near a bfloat16 rounding boundary then moves by an ulp, as in the test above).
TEST(AtenPath, OptRotStackOnGpuIsItsSlices) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine";
  at::manual_seed(8);
  const int64_t d = 128, heads = 24;
  const at::Tensor r = std::get<0>(at::linalg_qr(at::randn({d, d}, at::kDouble)));
  const at::Tensor blocks = at::randn({heads, 1024, d}, at::kDouble);
  FourthPowerObjective slices(d, OptRotNorm::kNumel), stack(d, OptRotNorm::kNumel),
      emulated(d, OptRotNorm::kNumel);
  // OptRot+ as R2 has it: a third of the heads ungrouped, the others in three groups.
  for (int64_t g = 0; g < 3; ++g) {
    const at::Tensor x = at::randn({4 * d, d}, at::kDouble);
    const at::Tensor sigma = at::matmul(x.t(), x);
    slices.add_covariance(sigma.cuda());
    stack.add_covariance(sigma.cuda());
    emulated.add_covariance(sigma);
  }
  std::vector<int> groups;
  for (int64_t h = 0; h < heads; ++h)
    groups.push_back(h % 3 == 0 ? -1 : static_cast<int>(h % 4) % 3);
  for (int64_t h = 0; h < heads; ++h) slices.add(blocks[h].cuda(), 1.0, groups[h]);
  stack.add_stack(blocks.cuda(), 1.0, groups);
  emulated.add_stack(blocks, 1.0, groups);
  for (const at::ScalarType dtype : {at::kDouble, at::kBFloat16}) {
    const double tol = dtype == at::kDouble ? 1e-12 : 2e-4;
    double l_slices = 0, l_stack = 0, l_emulated = 0;
    const at::Tensor g_slices = slices.local_gradient(r.cuda(), &l_slices, true, dtype).cpu();
    const at::Tensor g_stack = stack.local_gradient(r.cuda(), &l_stack, true, dtype).cpu();
    const at::Tensor g_emulated = emulated.local_gradient(r, &l_emulated, true, dtype);
    std::printf("stack on the GPU (%s): vs its slices %.3g, vs the CPU %.3g\n",
                dtype == at::kDouble ? "float64" : "bf16", relative_distance(g_stack, g_slices),
                relative_distance(g_stack, g_emulated));
    EXPECT_LT(relative_distance(g_stack, g_slices), tol) << dtype;
    EXPECT_LT(relative_distance(g_stack, g_emulated), tol) << dtype;
    EXPECT_NEAR(l_stack / l_slices, 1.0, tol) << dtype;
    EXPECT_NEAR(l_stack / l_emulated, 1.0, tol) << dtype;
  }
}

// R2's layers side by side on the GPU (batched skew products and Cayley solves, one loss read per
// step) against each layer solved alone there and the batch on the CPU: float64, 12 steps, four
// layers of 16 heads. The batched solve must neither mix the layers nor change their arithmetic
// beyond rounding.
TEST(AtenPath, OptRotBatchOnGpuIsEachLayerAlone) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device: runs on the GPU machine";
  at::manual_seed(9);
  const int64_t d = 128, layers = 4;
  std::vector<FourthPowerObjective> gpu, cpu;
  std::vector<at::Tensor> starts;
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor blocks = at::randn({16, 512, d}, at::kDouble);
    gpu.emplace_back(d, OptRotNorm::kNumel);
    cpu.emplace_back(d, OptRotNorm::kNumel);
    gpu.back().add_stack(blocks.cuda());
    cpu.back().add_stack(blocks);
    starts.push_back(std::get<0>(at::linalg_qr(at::randn({d, d}, at::kDouble))));
  }
  std::vector<const FourthPowerObjective*> gpu_ptrs, cpu_ptrs;
  for (int64_t l = 0; l < layers; ++l) {
    gpu_ptrs.push_back(&gpu[l]);
    cpu_ptrs.push_back(&cpu[l]);
  }
  CayleySgdOptions o;
  o.steps = 12;
  o.log_every = 0;
  const at::Tensor r0 = at::stack(starts);
  const at::Tensor on_gpu = minimize_fourth_power_batch(gpu_ptrs, r0.cuda(), o).cpu();
  const at::Tensor on_cpu = minimize_fourth_power_batch(cpu_ptrs, r0, o);
  double alone_gap = 0;
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor alone = minimize_fourth_power(gpu[l], starts[l].cuda(), o, nullptr).cpu();
    alone_gap = std::max(alone_gap, (on_gpu[l] - alone).abs().max().item<double>());
  }
  const double cpu_gap = (on_gpu - on_cpu).abs().max().item<double>();
  std::printf("R2 batch on the GPU: vs each layer alone %.3g, vs the CPU %.3g\n", alone_gap,
              cpu_gap);
  EXPECT_LT(alone_gap, 1e-10);
  EXPECT_LT(cpu_gap, 1e-10);
}

}  // namespace
}  // namespace rotq
