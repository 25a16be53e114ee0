#include "solvers/hadamard.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <tuple>
#include <utility>

#include "solvers/error.h"
#include "solvers/kernel_path.h"

namespace rotq {
namespace {

bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

int log2_exact(int64_t v) {
  int k = 0;
  while ((int64_t{1} << k) < v) ++k;
  return k;
}

int64_t largest_pow2_divisor(int64_t n) { return n & -n; }

// q = p^k with p prime and k >= 1.
bool prime_power(int64_t q, int64_t* p_out = nullptr, int* k_out = nullptr) {
  if (q < 2) return false;
  int64_t p = q;
  for (int64_t d = 2; d * d <= q; ++d) {
    if (q % d == 0) {
      p = d;
      break;
    }
  }
  int k = 0;
  int64_t r = q;
  while (r % p == 0) {
    r /= p;
    ++k;
  }
  if (r != 1) return false;
  if (p_out) *p_out = p;
  if (k_out) *k_out = k;
  return true;
}

// GF(q), q = p^k: an element is the polynomial sum_i d_i x^i (d_i in GF(p), i < k) modulo a
// primitive polynomial f of degree k, stored as the integer sum_i d_i p^i. A primitive f makes x a
// generator of the multiplicative group, so the discrete log of every nonzero element falls out of
// listing the powers of x, and the quadratic character is the parity of that log. This covers
// prime q (k = 1: f = x - g for a primitive root g) and prime powers (27, 25, 49, ...) alike.
class GaloisField {
 public:
  explicit GaloisField(int64_t q) : q_(q) {
    require(prime_power(q, &p_, &k_) && p_ != 2, "GF(q): q = ", q,
            ": expected a power of an odd prime");
    digits_.resize(q_ * k_);
    for (int64_t e = 0; e < q_; ++e) {
      int64_t r = e;
      for (int i = 0; i < k_; ++i, r /= p_) digits_[e * k_ + i] = static_cast<int>(r % p_);
    }
    // The first primitive f in the order of its coefficient code (f = x^k + sum_j c_j x^j with
    // code = sum_j c_j p^j): deterministic, and a primitive polynomial exists for every q.
    for (int64_t code = 1; code < q_; ++code) {
      const int* c = &digits_[code * k_];
      if (c[0] == 0) continue;  // x would divide f
      if (try_primitive(c)) return;
    }
    fail("GF(", q, "): no primitive polynomial found");  // unreachable for a prime power
  }

  int64_t size() const { return q_; }

  int64_t sub(int64_t a, int64_t b) const {
    if (k_ == 1) return (a - b + p_) % p_;
    int64_t r = 0;
    for (int i = k_ - 1; i >= 0; --i) {
      r = r * p_ + (digits_[a * k_ + i] - digits_[b * k_ + i] + p_) % p_;
    }
    return r;
  }

  int chi(int64_t a) const { return a == 0 ? 0 : (log_[a] % 2 == 0 ? 1 : -1); }

 private:
  // Lists the powers of x modulo f; f is primitive iff they run through all q - 1 nonzero
  // elements before repeating (then every nonzero element is a unit, so the ring is the field).
  bool try_primitive(const int* c) {
    std::vector<int64_t> log(q_, -1);
    std::vector<int64_t> e(k_, 0);
    e[0] = 1;
    for (int64_t i = 0; i < q_ - 1; ++i) {
      int64_t code = 0;
      for (int j = k_ - 1; j >= 0; --j) code = code * p_ + e[j];
      if (log[code] != -1) return false;
      log[code] = i;
      // e <- e * x, with x^k = -sum_j c_j x^j.
      const int64_t top = e[k_ - 1];
      for (int j = k_ - 1; j > 0; --j) e[j] = e[j - 1];
      e[0] = 0;
      for (int j = 0; j < k_; ++j) e[j] = ((e[j] - top * c[j]) % p_ + p_) % p_;
    }
    log_ = std::move(log);
    return true;
  }

  int64_t q_ = 0;
  int64_t p_ = 0;
  int k_ = 0;
  std::vector<int> digits_;  // k base-p digits of each element
  std::vector<int64_t> log_;
};

// Jacobsthal matrix Q[i][j] = chi(e_i - e_j) over the q elements of GF(q): QQᵀ = qI - J, QJ = 0;
// symmetric for q ≡ 1 (mod 4), antisymmetric for q ≡ 3 (mod 4).
std::vector<int> jacobsthal(const GaloisField& f) {
  const int64_t q = f.size();
  std::vector<int> chi(q);
  for (int64_t a = 0; a < q; ++a) chi[a] = f.chi(a);
  std::vector<int> Q(q * q);
  for (int64_t i = 0; i < q; ++i) {
    for (int64_t j = 0; j < q; ++j) Q[i * q + j] = chi[f.sub(i, j)];
  }
  return Q;
}

at::Tensor to_tensor(const std::vector<int>& v, int64_t n) {
  at::Tensor t = at::empty({n, n}, at::kDouble);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < n * n; ++i) p[i] = v[i];
  return t;
}

// Williamson quadruples: first rows of four symmetric circulant ±1 matrices A, B, C, D of order t
// with A² + B² + C² + D² = 4tI, so that the Williamson array below is a Hadamard matrix of order
// 4t. Only the orders the Paley constructions miss among 4t <= 236 are listed (4t = 92, 116, 156,
// 172; 188 and 236 have no Williamson matrices). Sequences as tabulated in SageMath's
// williamson_type_quadruples_smallcases, which takes t = 23, 29, 43 from M. Hall, Combinatorial
// Theory, 2nd ed., Wiley 1983, and t = 39 from S. London, Constructing New Turyn Type Sequences,
// T-Sequences and Hadamard Matrices, PhD thesis, University of Illinois at Chicago, 2013 (order 92
// = 4 · 23 was first reached this way by Baumert, Golomb and Hall, 1962). The tests check that the
// four blocks are symmetric circulants and that HHᵀ = nI.
struct WilliamsonQuadruple {
  int t;
  const char* rows[4];
};
constexpr WilliamsonQuadruple kWilliamson[] = {
    {23,
     {"++---+---+-++-+---+---+", "+-++-++--++++++--++-++-", "+++---++-+-++-+-++---++",
      "+++-+++-+------+-+++-++"}},
    {29,
     {"+++---++--+-+----+-+--++---++", "+-+---++--+-++++++-+--++---+-",
      "++++-++-+---++++++---+-++-+++", "++--+--+-+++-++++-+++-+--+--+"}},
    {39,
     {"+++--+-+-----+--++----++--+-----+-+--++", "+++--++-+---+-+--+----+--+-+---+-++--++",
      "++++---+--++----+-+--+-+----++--+---+++", "+---++-+-+-----+++-++-+++-----+-+-++---"}},
    {43,
     {"++---++++-+--+--++--------++--+--+-++++---+", "+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++",
      "++-++++++----+-+--++-++-++--+-+----++++++-+",
      "+---++--++++-+-+++-++--++-+++-+-++++--++---"}},
};

const WilliamsonQuadruple* find_williamson(int64_t t) {
  for (const auto& w : kWilliamson) {
    if (w.t == t) return &w;
  }
  return nullptr;
}

// How a core order m is built; kron splits m = a * b.
struct CoreRecipe {
  enum Kind { kNone, kOne, kPaley1, kPaley2, kWilliamson, kKron } kind = kNone;
  int64_t param = 0;  // q for Paley, t for Williamson
  int64_t a = 0, b = 0;
  std::string name;
};

std::recursive_mutex& cache_mutex() {
  static std::recursive_mutex mu;
  return mu;
}

// The preference order of hadamard.h: Paley I, Paley II, Williamson, Kronecker (smallest factor
// first). Memoized because hadamard_plans asks about every m of every n it sees.
const CoreRecipe& core_recipe(int64_t m) {
  std::lock_guard<std::recursive_mutex> lock(cache_mutex());
  static std::map<int64_t, CoreRecipe> memo;
  auto it = memo.find(m);
  if (it != memo.end()) return it->second;
  CoreRecipe r;
  if (m == 1) {
    r.kind = CoreRecipe::kOne;
    r.name = "1";
  } else if (m >= 12 && m % 4 == 0 && !is_pow2(m)) {
    if (prime_power(m - 1) && (m - 1) % 4 == 3) {
      r.kind = CoreRecipe::kPaley1;
      r.param = m - 1;
      r.name = "paley1(q=" + std::to_string(r.param) + ")";
    } else if (prime_power(m / 2 - 1) && (m / 2 - 1) % 4 == 1) {
      r.kind = CoreRecipe::kPaley2;
      r.param = m / 2 - 1;
      r.name = "paley2(q=" + std::to_string(r.param) + ")";
    } else if (find_williamson(m / 4)) {
      r.kind = CoreRecipe::kWilliamson;
      r.param = m / 4;
      r.name = "williamson(t=" + std::to_string(r.param) + ")";
    } else {
      for (int64_t a = 12; a * a <= m; a += 4) {
        if (m % a != 0 || (m / a) % 4 != 0) continue;
        if (core_recipe(a).kind == CoreRecipe::kNone) continue;
        if (core_recipe(m / a).kind == CoreRecipe::kNone) continue;
        r.kind = CoreRecipe::kKron;
        r.a = a;
        r.b = m / a;
        r.name = core_recipe(a).name + " x " + core_recipe(m / a).name;
        break;
      }
    }
  }
  return memo.emplace(m, std::move(r)).first->second;
}

at::Tensor build_core(int64_t m) {
  const CoreRecipe& r = core_recipe(m);
  switch (r.kind) {
    case CoreRecipe::kOne:
      return at::ones({1, 1}, at::kDouble);
    case CoreRecipe::kPaley1:
      return hadamard_detail::paley1(r.param);
    case CoreRecipe::kPaley2:
      return hadamard_detail::paley2(r.param);
    case CoreRecipe::kWilliamson:
      return hadamard_detail::williamson(r.param);
    case CoreRecipe::kKron:
      return at::kron(hadamard_core(r.a), hadamard_core(r.b)).contiguous();
    case CoreRecipe::kNone:
      break;
  }
  if (is_pow2(m) && m > 1) {
    fail("Hadamard core of order ", m, ": ", m,
         " is a power of two (the Sylvester factor); expected 1 or a non-power of two");
  }
  fail("Hadamard core of order ", m,
       ": no construction (expected m = 1, or a multiple of 4 reachable by Paley I, Paley II, "
       "Williamson t in {23, 29, 39, 43} or a Kronecker product of those)");
}

// H_mᵀ in the compute dtype, scaled by 1/sqrt(m) when normalized: the right-hand side of the
// transform's GEMM, reused on every forward call.
at::Tensor core_rhs(int64_t m, at::ScalarType dtype, bool normalized) {
  std::lock_guard<std::recursive_mutex> lock(cache_mutex());
  static std::map<std::tuple<int64_t, int, bool>, at::Tensor> cache;
  const auto key = std::make_tuple(m, static_cast<int>(dtype), normalized);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  at::Tensor h = hadamard_core(m).t();
  if (normalized) h = h / std::sqrt(static_cast<double>(m));
  h = h.to(dtype).contiguous();
  cache.emplace(key, h);
  return h;
}

std::string describe(int64_t m, int64_t pow2) {
  const std::string syl = "sylvester(2^" + std::to_string(log2_exact(pow2)) + ")";
  if (m == 1) return syl;
  if (pow2 == 1) return core_recipe(m).name;
  return syl + " x " + core_recipe(m).name;
}

// --- the butterfly over the Sylvester factor --------------------------------------------------
//
// A row of length n = pow2 * m is a pow2 × m matrix (m contiguous); H_pow2 acts on its rows, so
// stage s pairs the contiguous runs [j, j + h) and [j + h, j + 2h) with h = m * 2^s. The inner
// loops run over whole runs in fixed blocks of 16 so that the compiler vectorizes them at -O2.

constexpr int kBlock = 16;

// (u, v) <- ((u + v) * s, (u - v) * s) over two disjoint runs.
template <typename T, bool kScale>
inline void add_sub_inplace(T* __restrict u, T* __restrict v, int64_t len, T s) {
  int64_t t = 0;
  for (; t + kBlock <= len; t += kBlock) {
    for (int i = 0; i < kBlock; ++i) {
      const T a = u[t + i], b = v[t + i];
      u[t + i] = kScale ? (a + b) * s : a + b;
      v[t + i] = kScale ? (a - b) * s : a - b;
    }
  }
  for (; t < len; ++t) {
    const T a = u[t], b = v[t];
    u[t] = kScale ? (a + b) * s : a + b;
    v[t] = kScale ? (a - b) * s : a - b;
  }
}

// (du, dv) <- ((su + sv) * s, (su - sv) * s), source and destination distinct.
template <typename T>
inline void add_sub_copy(const T* __restrict su, const T* __restrict sv, T* __restrict du,
                         T* __restrict dv, int64_t len, T s) {
  int64_t t = 0;
  for (; t + kBlock <= len; t += kBlock) {
    for (int i = 0; i < kBlock; ++i) {
      const T a = su[t + i], b = sv[t + i];
      du[t + i] = (a + b) * s;
      dv[t + i] = (a - b) * s;
    }
  }
  for (; t < len; ++t) {
    const T a = su[t], b = sv[t];
    du[t] = (a + b) * s;
    dv[t] = (a - b) * s;
  }
}

// 8-point transform of src[0..8) (Sylvester order) into dst, scaled by s; src may be dst.
template <typename T>
inline void wht8(const T* src, T* dst, T s) {
  const T a0 = src[0] + src[1], a1 = src[0] - src[1], a2 = src[2] + src[3], a3 = src[2] - src[3];
  const T a4 = src[4] + src[5], a5 = src[4] - src[5], a6 = src[6] + src[7], a7 = src[6] - src[7];
  const T b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;
  const T b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;
  dst[0] = (b0 + b4) * s;
  dst[4] = (b0 - b4) * s;
  dst[1] = (b1 + b5) * s;
  dst[5] = (b1 - b5) * s;
  dst[2] = (b2 + b6) * s;
  dst[6] = (b2 - b6) * s;
  dst[3] = (b3 + b7) * s;
  dst[7] = (b3 - b7) * s;
}

// One row: dst = (H_pow2 ⊗ I_m) src * s. The first stage reads src (which may be dst); the scale
// rides on the first stage so it costs no extra pass.
template <typename T>
void butterfly_row(const T* src, T* dst, int64_t pow2, int64_t m, T s) {
  const int64_t n = pow2 * m;
  if (pow2 == 1) {
    for (int64_t t = 0; t < n; ++t) dst[t] = src[t] * s;
    return;
  }
  int64_t h = m;
  if (m == 1 && pow2 >= 8) {
    // Runs of 1, 2 and 4 elements are too short to vectorize: do the first three stages as one
    // 8-point transform per block.
    for (int64_t j = 0; j < n; j += 8) wht8(src + j, dst + j, s);
    h = 8;
  } else {
    for (int64_t j = 0; j < n; j += 2 * h) {
      if (src == dst) {
        add_sub_inplace<T, true>(dst + j, dst + j + h, h, s);
      } else {
        add_sub_copy(src + j, src + j + h, dst + j, dst + j + h, h, s);
      }
    }
    h *= 2;
  }
  for (; h < n; h *= 2) {
    for (int64_t j = 0; j < n; j += 2 * h) add_sub_inplace<T, false>(dst + j, dst + j + h, h, s);
  }
}

template <typename T>
void butterfly_rows(const T* src, T* dst, int64_t rows, int64_t pow2, int64_t m, double scale) {
  const int64_t n = pow2 * m;
  const int64_t grain = std::max<int64_t>(1, 32768 / n);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      butterfly_row<T>(src + r * n, dst + r * n, pow2, m, static_cast<T>(scale));
    }
  });
}

// The same transform from ATen ops alone, for tensors off the CPU (the butterfly reads raw host
// memory): Sylvester(2^k) = Sylvester(a) ⊗ Sylvester(b), so with x viewed as [rows, a, b, m] the
// transform is three small GEMMs, one per axis: n·(a + b + m) multiply-adds per row.
at::Tensor device_factor(const at::Tensor& h, const at::Tensor& like, at::ScalarType ct) {
  std::lock_guard<std::recursive_mutex> lock(cache_mutex());
  // Keyed by plain values: this runs at every online transform of every forward.
  static std::map<std::tuple<const void*, int, int, int>, at::Tensor> cache;
  const auto key = std::make_tuple(static_cast<const void*>(h.unsafeGetTensorImpl()),
                                   static_cast<int>(like.device().type()),
                                   static_cast<int>(like.device().index()), static_cast<int>(ct));
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, h.to(like.device(), ct).contiguous()).first;
  return it->second;
}

const at::Tensor& sylvester_cached(int64_t pow2) {
  std::lock_guard<std::recursive_mutex> lock(cache_mutex());
  static std::map<int64_t, at::Tensor> cache;
  auto it = cache.find(pow2);
  if (it == cache.end()) it = cache.emplace(pow2, hadamard_detail::sylvester(pow2)).first;
  return it->second;
}

// The transform from ATen ops alone: used off the CPU (the butterfly reads raw host memory) and
// when a gradient is wanted (autograd records the GEMMs, so the backward applies Hᵀ, which differs
// from H for a non-symmetric core). Result in x's dtype and shape.
at::Tensor transform_aten(const at::Tensor& x, const HadamardPlan& plan, bool normalized) {
  const at::ScalarType ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t n = plan.n, m = plan.m, pow2 = plan.pow2, rows = x.numel() / n;
  at::Tensor y = x.reshape({rows, n}).to(ct);
  if (m > 1)
    y = at::matmul(y.reshape({rows * pow2, m}), device_factor(core_rhs(m, ct, normalized), x, ct));
  if (pow2 > 1) {
    const int k = log2_exact(pow2);
    const int64_t a = int64_t{1} << ((k + 1) / 2), b = pow2 / a;
    y = at::matmul(device_factor(sylvester_cached(a), x, ct), y.reshape({rows, a, b * m}));
    if (b > 1)
      y = at::matmul(device_factor(sylvester_cached(b), x, ct), y.reshape({rows * a, b, m}));
    if (normalized) y = y * (1.0 / std::sqrt(static_cast<double>(pow2)));
  }
  return y.reshape(x.sizes()).to(x.scalar_type());
}

void transform_into(at::Tensor& out, const at::Tensor& x, bool normalized) {
  require(x.defined() && x.dim() >= 1, "hadamard_transform: expected a tensor with at least one ",
          "dimension");
  const at::ScalarType dt = x.scalar_type();
  require(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 || dt == at::kHalf,
          "hadamard_transform: dtype ", c10::toString(dt),
          ": expected float32, float64, bfloat16 or float16");
  const int64_t n = x.size(-1);
  const HadamardPlan plan = hadamard_plan(n);
  require(
      out.defined() && out.sizes() == x.sizes() && out.scalar_type() == dt && out.is_contiguous(),
      "hadamard_transform_out: out must be contiguous with x's shape ", x.sizes(), " and dtype ",
      c10::toString(dt));
  if (x.numel() == 0) return;
  if (use_aten_kernels(x)) {
    out.copy_(transform_aten(x, plan, normalized));
    return;
  }
  if (x.is_alias_of(out)) {
    const char* xb = static_cast<const char*>(x.data_ptr());
    const char* ob = static_cast<const char*>(out.data_ptr());
    const int64_t bytes = out.numel() * out.element_size();
    require(xb >= ob + bytes || ob >= xb + bytes, "hadamard_transform_out: out overlaps x (n = ", n,
            ")");
  }
  // Rows are processed in chunks of about 1 MiB so that the GEMM's output is still in cache when
  // the butterfly runs over it, and bfloat16/float16 are widened chunk by chunk into reused
  // buffers instead of whole-tensor temporaries (fresh pages are expensive here).
  const at::ScalarType ct = dt == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t rows = x.numel() / n, m = plan.m, pow2 = plan.pow2;
  const at::Tensor x2 = (x.is_contiguous() ? x : x.contiguous()).view({rows, n});
  at::Tensor out2 = out.view({rows, n});
  const bool direct_in = dt == ct, direct_out = dt == ct;
  const at::Tensor rhs = m > 1 ? core_rhs(m, ct, normalized) : at::Tensor();
  const double pow2_scale = normalized ? 1.0 / std::sqrt(static_cast<double>(pow2)) : 1.0;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t{1} << 18) / n));
  const size_t chunk_bytes = static_cast<size_t>(chunk * n) * at::elementSize(ct);
  thread_local std::vector<double> scratch_in, scratch_out;  // double: aligned for any ct
  if (!direct_in && scratch_in.size() * sizeof(double) < chunk_bytes) {
    scratch_in.resize(chunk_bytes / sizeof(double) + 1);
  }
  if (!direct_out && scratch_out.size() * sizeof(double) < chunk_bytes) {
    scratch_out.resize(chunk_bytes / sizeof(double) + 1);
  }
  const auto opts = at::TensorOptions().dtype(ct);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t rc = std::min(chunk, rows - r0);
    at::Tensor src = x2.narrow(0, r0, rc);
    if (!direct_in) {
      at::Tensor widened = at::from_blob(scratch_in.data(), {rc, n}, opts);
      widened.copy_(src);
      src = widened;
    }
    at::Tensor dst =
        direct_out ? out2.narrow(0, r0, rc) : at::from_blob(scratch_out.data(), {rc, n}, opts);
    const void* bsrc = src.data_ptr();
    if (m > 1) {
      at::Tensor d2 = dst.view({rc * pow2, m});
      at::mm_out(d2, src.view({rc * pow2, m}), rhs);
      bsrc = dst.data_ptr();
    }
    if (pow2 == 1 && m > 1) {
      // The GEMM did all the work (its right-hand side carries the scale).
    } else if (ct == at::kDouble) {
      butterfly_rows<double>(static_cast<const double*>(bsrc), dst.data_ptr<double>(), rc, pow2, m,
                             pow2_scale);
    } else {
      butterfly_rows<float>(static_cast<const float*>(bsrc), dst.data_ptr<float>(), rc, pow2, m,
                            pow2_scale);
    }
    if (!direct_out) out2.narrow(0, r0, rc).copy_(dst);
  }
}

// First-touch page faults dominate building a dense matrix of order ~10^4 on these VMs (filling
// 1.5 GiB took 9-12 s with 4 KiB pages, 6-7 s with 2 MiB pages): ask for transparent huge pages,
// which the THP mode here ("madvise") grants only on request. Purely a hint.
void advise_huge_pages(void* p, size_t bytes) {
#ifdef __linux__
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (bytes < 32 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

// dst[i][j] = row_factor[i] * H[i][j] with H = sylvester(pow2) ⊗ core: every row is pow2 copies of
// one core row with the signs of a Sylvester row, so it is filled by copies, not products.
at::Tensor fill_dense(const HadamardPlan& plan, const double* row_factor) {
  const int64_t n = plan.n, m = plan.m, pow2 = plan.pow2;
  at::Tensor core = hadamard_core(m).contiguous();
  const double* hc = core.data_ptr<double>();
  at::Tensor out = at::empty({n, n}, at::kDouble);
  double* o = out.data_ptr<double>();
  advise_huge_pages(o, n * n * sizeof(double));
  at::parallel_for(0, n, std::max<int64_t>(1, 65536 / n), [&](int64_t r0, int64_t r1) {
    std::vector<double> pos(m), neg(m);
    for (int64_t i = r0; i < r1; ++i) {
      const int64_t b = i / m, a = i % m;
      const double f = row_factor ? row_factor[i] : 1.0;
      for (int64_t c = 0; c < m; ++c) {
        pos[c] = f * hc[a * m + c];
        neg[c] = -pos[c];
      }
      double* row = o + i * n;
      for (int64_t d = 0; d < pow2; ++d) {
        const double* s =
            (__builtin_popcountll(static_cast<uint64_t>(b & d)) & 1) ? neg.data() : pos.data();
        std::memcpy(row + d * m, s, m * sizeof(double));
      }
    }
  });
  return out;
}

}  // namespace

namespace hadamard_detail {

std::vector<int> quadratic_character(int64_t q) {
  GaloisField f(q);
  std::vector<int> chi(q);
  for (int64_t a = 0; a < q; ++a) chi[a] = f.chi(a);
  return chi;
}

// S = [[0, jᵀ], [-j, Q]] is skew with SSᵀ = qI, so (I + S)(I + S)ᵀ = I - S² = (q + 1)I.
at::Tensor paley1(int64_t q) {
  require(prime_power(q) && q % 4 == 3, "Paley I: q = ", q,
          ": expected a prime power q ≡ 3 (mod 4)");
  GaloisField f(q);
  const std::vector<int> Q = jacobsthal(f);
  const int64_t n = q + 1;
  std::vector<int> h(n * n);
  for (int64_t j = 0; j < n; ++j) h[j] = 1;
  for (int64_t i = 1; i < n; ++i) {
    h[i * n] = -1;
    for (int64_t j = 1; j < n; ++j) h[i * n + j] = Q[(i - 1) * q + (j - 1)] + (i == j ? 1 : 0);
  }
  return to_tensor(h, n);
}

// C = [[0, jᵀ], [j, Q]] is a symmetric conference matrix (CCᵀ = qI); replacing its zeros by
// [[1, -1], [-1, -1]] and its ±1 by ±[[1, 1], [1, -1]] gives a Hadamard matrix of order 2(q + 1).
at::Tensor paley2(int64_t q) {
  require(prime_power(q) && q % 4 == 1, "Paley II: q = ", q,
          ": expected a prime power q ≡ 1 (mod 4)");
  GaloisField f(q);
  const std::vector<int> Q = jacobsthal(f);
  const int64_t c = q + 1, n = 2 * c;
  auto conf = [&](int64_t i, int64_t j) -> int {
    if (i == 0) return j == 0 ? 0 : 1;
    if (j == 0) return 1;
    return Q[(i - 1) * q + (j - 1)];
  };
  std::vector<int> h(n * n);
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      const int e = conf(i, j);
      const int blk[4] = {e == 0 ? 1 : e, e == 0 ? -1 : e, e == 0 ? -1 : e, e == 0 ? -1 : -e};
      h[(2 * i) * n + 2 * j] = blk[0];
      h[(2 * i) * n + 2 * j + 1] = blk[1];
      h[(2 * i + 1) * n + 2 * j] = blk[2];
      h[(2 * i + 1) * n + 2 * j + 1] = blk[3];
    }
  }
  return to_tensor(h, n);
}

// The Williamson array [[A, B, C, D], [-B, A, -D, C], [-C, D, A, -B], [-D, -C, B, A]]: its block
// rows are orthogonal because symmetric circulant matrices commute.
at::Tensor williamson(int64_t t) {
  const WilliamsonQuadruple* w = find_williamson(t);
  require(w != nullptr, "Williamson construction: t = ", t,
          ": expected one of the tabulated orders 23, 29, 39, 43");
  std::vector<std::vector<int>> first(4, std::vector<int>(t));
  for (int k = 0; k < 4; ++k) {
    require(static_cast<int64_t>(std::strlen(w->rows[k])) == t, "Williamson t = ", t, ": row ", k,
            " has the wrong length");
    for (int64_t i = 0; i < t; ++i) first[k][i] = w->rows[k][i] == '+' ? 1 : -1;
  }
  // block (R, C) = sign * X where X is A, B, C or D (index into `first`).
  static const int kIdx[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  static const int kSign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  const int64_t n = 4 * t;
  std::vector<int> h(n * n);
  for (int R = 0; R < 4; ++R) {
    for (int C = 0; C < 4; ++C) {
      const std::vector<int>& row = first[kIdx[R][C]];
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < t; ++j) {
          h[(R * t + i) * n + C * t + j] = kSign[R][C] * row[((j - i) % t + t) % t];
        }
      }
    }
  }
  return to_tensor(h, n);
}

at::Tensor sylvester(int64_t pow2) {
  require(is_pow2(pow2), "Sylvester construction: order ", pow2, ": expected a power of two");
  at::Tensor t = at::empty({pow2, pow2}, at::kDouble);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < pow2; ++i) {
    for (int64_t j = 0; j < pow2; ++j) {
      p[i * pow2 + j] = (__builtin_popcountll(static_cast<uint64_t>(i & j)) & 1) ? -1.0 : 1.0;
    }
  }
  return t;
}

}  // namespace hadamard_detail

std::vector<HadamardPlan> hadamard_plans(int64_t n) {
  std::vector<HadamardPlan> plans;
  if (n <= 0) return plans;
  for (int64_t pow2 = largest_pow2_divisor(n); pow2 >= 1; pow2 /= 2) {
    const int64_t m = n / pow2;
    if (m > 1 && is_pow2(m)) continue;  // the Sylvester factor already covers it (m = 1)
    if (core_recipe(m).kind == CoreRecipe::kNone) continue;
    plans.push_back({n, m, pow2, describe(m, pow2)});
  }
  return plans;
}

bool hadamard_exists(int64_t n) { return !hadamard_plans(n).empty(); }

HadamardPlan hadamard_plan(int64_t n) {
  require(n > 0, "Hadamard matrix of order n = ", n, ": expected a positive size");
  std::vector<HadamardPlan> plans = hadamard_plans(n);
  if (plans.empty()) {
    std::string tried;
    for (int64_t pow2 = largest_pow2_divisor(n); pow2 >= 1; pow2 /= 2) {
      tried += (tried.empty() ? "" : ", ") + std::to_string(n / pow2);
    }
    fail("Hadamard matrix of order n = ", n,
         ": no construction; expected n = m * 2^k with m = 1 or ",
         "a multiple of 4 reachable by Paley I (m - 1 ≡ 3 mod 4 a prime power), Paley II (m/2 - 1 ",
         "≡ 1 mod 4 a prime power), Williamson (m/4 in {23, 29, 39, 43}) or Kronecker products of ",
         "those (tried m = ", tried, ")");
  }
  return plans.front();
}

at::Tensor hadamard_core(int64_t m) {
  require(m > 0, "Hadamard core of order ", m, ": expected a positive size");
  std::lock_guard<std::recursive_mutex> lock(cache_mutex());
  static std::map<int64_t, at::Tensor> cache;
  auto it = cache.find(m);
  if (it == cache.end()) it = cache.emplace(m, build_core(m)).first;
  // A copy, so callers cannot write into the cached matrix.
  return it->second.clone();
}

at::Tensor hadamard_matrix(int64_t n) { return fill_dense(hadamard_plan(n), nullptr); }

at::Tensor hadamard_transform(const at::Tensor& x) {
  // A training forward (learned rotations) differentiates through the online R3/R4.
  if (x.defined() && x.requires_grad() && at::GradMode::is_enabled() && x.dim() >= 1) {
    return transform_aten(x, hadamard_plan(x.size(-1)), /*normalized=*/true);
  }
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  transform_into(out, x, /*normalized=*/true);
  return out;
}

void hadamard_transform_out(at::Tensor& out, const at::Tensor& x) {
  transform_into(out, x, /*normalized=*/true);
}

at::Tensor hadamard_transform_unnormalized(const at::Tensor& x) {
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  transform_into(out, x, /*normalized=*/false);
  return out;
}

at::Tensor random_hadamard_signs(int64_t n, uint64_t seed) {
  require(n > 0, "random Hadamard signs: n = ", n, ": expected a positive size");
  std::mt19937_64 gen(seed);
  at::Tensor s = at::empty({n}, at::kDouble);
  double* p = s.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = (gen() >> 63) ? -1.0 : 1.0;
  return s;
}

at::Tensor random_hadamard_matrix(int64_t n, uint64_t seed) {
  const HadamardPlan plan = hadamard_plan(n);
  at::Tensor s = random_hadamard_signs(n, seed) / std::sqrt(static_cast<double>(n));
  return fill_dense(plan, s.data_ptr<double>());
}

}  // namespace rotq
