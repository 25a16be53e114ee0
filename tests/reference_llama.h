// A float64 scalar reference of the LLaMA-family forward pass, written from the equations with
// plain loops (run.c style) and independent of rotq's ATen implementation. Tests compare rotq's
// logits against it. Weights are read from a rotq Model (any dtype; converted to double here).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/weights.h"

namespace rotq_test {

using Vec = std::vector<double>;
using Mat = std::vector<double>;  // row-major [out, in]

struct RefLayer {
  Mat wq, wk, wv, wo, wg, wu, wd;
  Vec bq, bk, bv, qn, kn, an, fn;
  Vec bo, bg, bu, bd;
};

// hidden_act by its textbook formula (transformers' ACT2FN).
inline double reference_activation(const std::string& name, double x) {
  if (name == "silu" || name == "swish") return x / (1.0 + std::exp(-x));
  if (name == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  if (name == "relu") return x > 0 ? x : 0.0;
  throw std::runtime_error("reference: activation " + name);
}

inline Vec to_vec(const at::Tensor& t) {
  if (!t.defined()) return {};
  at::Tensor d = t.to(at::kDouble).contiguous();
  return Vec(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// y[o] = sum_i W[o, i] x[i] (+ b[o])
inline Vec matvec(const Mat& w, const Vec& x, const Vec& b = {}) {
  const size_t in = x.size(), out = w.size() / in;
  Vec y(out, 0.0);
  for (size_t o = 0; o < out; ++o) {
    double s = b.empty() ? 0.0 : b[o];
    for (size_t i = 0; i < in; ++i) s += w[o * in + i] * x[i];
    y[o] = s;
  }
  return y;
}

inline Vec rmsnorm(const Vec& x, const Vec& g, double eps, size_t off = 0, size_t n = 0) {
  if (n == 0) n = x.size();
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
  const double inv = 1.0 / std::sqrt(ss / n + eps);
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = x[off + i] * inv * (g.empty() ? 1.0 : g[i]);
  return y;
}

// Inverse RoPE frequencies, written out independently of rotq (none | linear | llama3).
inline Vec reference_inv_freq(const rotq::ModelConfig& c) {
  Vec f(c.head_dim / 2);
  for (size_t i = 0; i < f.size(); ++i) {
    double freq = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
    const auto& r = c.rope_scaling;
    if (r.type == "linear") freq /= r.factor;
    if (r.type == "llama3") {
      const double wl = 2 * M_PI / freq, lo = r.original_max_position / r.low_freq_factor,
                   hi = r.original_max_position / r.high_freq_factor;
      if (wl > lo) {
        freq = freq / r.factor;
      } else if (wl >= hi) {
        const double s = (r.original_max_position / wl - r.low_freq_factor) /
                         (r.high_freq_factor - r.low_freq_factor);
        freq = (1 - s) * freq / r.factor + s * freq;
      }
    }
    f[i] = freq;
  }
  return f;
}

// Logits [T][vocab] for one sequence.
inline std::vector<Vec> reference_logits(const rotq::Model& m, const std::vector<int64_t>& tokens) {
  using rotq::LayerTensor;
  const rotq::ModelConfig& c = m.config;
  const size_t D = c.dim, H = c.n_heads, KVH = c.n_kv_heads, hd = c.head_dim, T = tokens.size();
  const size_t half = hd / 2;
  std::vector<RefLayer> L;
  for (const auto& lw : m.weights.layers) {
    L.push_back({to_vec(lw[LayerTensor::kWq]), to_vec(lw[LayerTensor::kWk]),
                 to_vec(lw[LayerTensor::kWv]), to_vec(lw[LayerTensor::kWo]),
                 to_vec(lw[LayerTensor::kWGate]), to_vec(lw[LayerTensor::kWUp]),
                 to_vec(lw[LayerTensor::kWDown]), to_vec(lw[LayerTensor::kBq]),
                 to_vec(lw[LayerTensor::kBk]), to_vec(lw[LayerTensor::kBv]),
                 to_vec(lw[LayerTensor::kQNorm]), to_vec(lw[LayerTensor::kKNorm]),
                 to_vec(lw[LayerTensor::kAttnNorm]), to_vec(lw[LayerTensor::kFfnNorm]),
                 to_vec(lw[LayerTensor::kBo]), to_vec(lw[LayerTensor::kBGate]),
                 to_vec(lw[LayerTensor::kBUp]), to_vec(lw[LayerTensor::kBDown])});
  }
  const Vec emb = to_vec(m.weights.embed), head = to_vec(m.weights.lm_head),
            fnorm = to_vec(m.weights.final_norm);
  const Vec inv_freq = reference_inv_freq(c);
  std::vector<Vec> x(T);
  for (size_t t = 0; t < T; ++t)
    x[t] = Vec(emb.begin() + tokens[t] * D, emb.begin() + (tokens[t] + 1) * D);

  auto rope = [&](Vec& v, size_t heads, size_t pos) {
    for (size_t h = 0; h < heads; ++h) {
      for (size_t i = 0; i < half; ++i) {
        const double a = pos * inv_freq[i], co = std::cos(a), si = std::sin(a);
        double& x1 = v[h * hd + i];
        double& x2 = v[h * hd + i + half];
        const double r1 = x1 * co - x2 * si, r2 = x2 * co + x1 * si;
        x1 = r1;
        x2 = r2;
      }
    }
  };
  auto head_norm = [&](Vec& v, size_t heads, const Vec& g) {
    if (g.empty()) return;
    for (size_t h = 0; h < heads; ++h) {
      Vec y = rmsnorm(v, g, c.norm_eps, h * hd, hd);
      std::copy(y.begin(), y.end(), v.begin() + h * hd);
    }
  };

  for (const RefLayer& l : L) {
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const Vec h = rmsnorm(x[t], l.an, c.norm_eps);
      q[t] = matvec(l.wq, h, l.bq);
      k[t] = matvec(l.wk, h, l.bk);
      v[t] = matvec(l.wv, h, l.bv);
      head_norm(q[t], H, l.qn);
      head_norm(k[t], KVH, l.kn);
      rope(q[t], H, t);
      rope(k[t], KVH, t);
    }
    for (size_t t = 0; t < T; ++t) {
      Vec att(H * hd, 0.0);
      for (size_t h = 0; h < H; ++h) {
        const size_t kh = h / (H / KVH);
        Vec s(t + 1);
        double mx = -1e300;
        for (size_t u = 0; u <= t; ++u) {
          double d = 0;
          for (size_t i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[u][kh * hd + i];
          s[u] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[u]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (size_t u = 0; u <= t; ++u) {
          for (size_t i = 0; i < hd; ++i) att[h * hd + i] += s[u] / z * v[u][kh * hd + i];
        }
      }
      const Vec o = matvec(l.wo, att, l.bo);
      for (size_t i = 0; i < D; ++i) x[t][i] += o[i];
    }
    for (size_t t = 0; t < T; ++t) {
      const Vec h = rmsnorm(x[t], l.fn, c.norm_eps);
      Vec g = matvec(l.wg, h, l.bg);
      const Vec u = matvec(l.wu, h, l.bu);
      for (size_t i = 0; i < g.size(); ++i) g[i] = reference_activation(c.hidden_act, g[i]) * u[i];
      const Vec d = matvec(l.wd, g, l.bd);
      for (size_t i = 0; i < D; ++i) x[t][i] += d[i];
    }
  }
  std::vector<Vec> logits(T);
  for (size_t t = 0; t < T; ++t) logits[t] = matvec(head, rmsnorm(x[t], fnorm, c.norm_eps));
  return logits;
}

}  // namespace rotq_test
