#include "runner/rotate/block_inputs.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "models/transformer.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/fuse/fusion.h"
#include "solvers/error.h"

namespace rotq {
namespace {

class BlockInputCapture final : public ForwardHooks {
 public:
  void at_site(Site site, int64_t layer, at::Tensor& x) override {
    if (site != Site::kAttnIn && site != Site::kMlpIn) return;
    captured.push_back({layer, site == Site::kAttnIn ? BlockSite::kAttn : BlockSite::kMlp,
                        x.detach().to(at::kFloat).clone()});
  }
  struct Item {
    int64_t layer;
    BlockSite site;
    at::Tensor x;  // [B, T, C]
  };
  std::vector<Item> captured;
};

}  // namespace

BlockInputs collect_block_inputs(const Model& model, const at::Tensor& windows, int64_t max_layers,
                                 const Placement& placement, Comm* comm) {
  require(norms_are_fused(model),
          "block inputs: fold the RMSNorm scales first (fuse_norms), so that they are x/rms(x)");
  require(windows.dim() == 2 && windows.size(0) > 0 && windows.size(1) > 0,
          "block inputs: expected token windows [B, T], got ", windows.sizes());
  const int64_t n_layers = model.config.n_layers;
  const int64_t layers = max_layers > 0 ? std::min(max_layers, n_layers) : n_layers;
  Transformer tf(model);
  BlockInputCapture cap;
  if (placement.sharded()) {
    // Each stage captures its own layers' inputs: the tokens end up sharded by layer.
    require(comm, "block inputs: a sharded model needs its communicator");
    pipeline_forward({&tf}, {&cap}, placement, *comm, {windows.to(at::kLong)},
                     [](size_t, const std::vector<at::Tensor>&) {});
    cap.captured.erase(std::remove_if(cap.captured.begin(), cap.captured.end(),
                                      [&](const auto& it) { return it.layer >= layers; }),
                       cap.captured.end());
  } else {
    at::Tensor h = tf.embed(windows.to(at::kLong));
    for (int64_t l = 0; l < layers; ++l) h = tf.layer_forward(h, l, &cap);
  }

  const int64_t B = windows.size(0), T = windows.size(1);
  const at::Tensor tokens = windows.to(at::kLong).contiguous();
  const int64_t* tp = tokens.data_ptr<int64_t>();
  BlockInputs out;
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    for (const auto& item : cap.captured) {
      rows.push_back(item.x[b]);
      for (int64_t t = 0; t < T; ++t) {
        out.layer.push_back(static_cast<int32_t>(item.layer));
        out.site.push_back(item.site);
        out.position.push_back(static_cast<int32_t>(t));
        out.token.push_back(static_cast<int32_t>(tp[b * T + t]));
      }
    }
  }
  out.x =
      rows.empty() ? at::zeros({0, model.config.dim}, at::kFloat) : at::cat(rows, 0).contiguous();
  return out;
}

BlockInputs slice_block_inputs(const BlockInputs& in, int64_t begin, int64_t end) {
  require(0 <= begin && begin <= end && end <= in.size(), "block inputs: bad slice [", begin, ", ",
          end, ") of ", in.size());
  BlockInputs out;
  out.x = in.x.narrow(0, begin, end - begin);
  const auto cut = [&](const auto& v) {
    return std::decay_t<decltype(v)>(v.begin() + begin, v.begin() + end);
  };
  out.layer = cut(in.layer);
  out.site = cut(in.site);
  out.position = cut(in.position);
  out.token = cut(in.token);
  return out;
}

std::vector<std::string> describe_massive_tokens(const BlockInputs& in, const at::Tensor& massive,
                                                 const Tokenizer* tok) {
  require(massive.numel() == in.size(), "massive-token mask of ", massive.numel(), " for ",
          in.size(), " tokens");
  const at::Tensor m = massive.to(at::kCPU, at::kBool).contiguous();
  const bool* flag = m.data_ptr<bool>();
  std::map<int32_t, std::pair<int64_t, int64_t>> per_layer;  // layer -> (attn, mlp)
  std::map<int32_t, int64_t> per_position, per_token;
  int64_t count = 0;
  for (int64_t i = 0; i < in.size(); ++i) {
    if (!flag[i]) continue;
    ++count;
    auto& pl = per_layer[in.layer[i]];
    (in.site[i] == BlockSite::kAttn ? pl.first : pl.second) += 1;
    per_position[in.position[i]] += 1;
    per_token[in.token[i]] += 1;
  }
  std::vector<std::string> lines;
  std::ostringstream s;
  s.precision(3);
  s << "massive tokens: " << count << " of " << in.size() << " ("
    << 100.0 * static_cast<double>(count) / static_cast<double>(std::max<int64_t>(1, in.size()))
    << "%)";
  lines.push_back(s.str());
  if (count == 0) return lines;
  std::ostringstream layers;
  layers << "  by layer (attn/mlp):";
  for (const auto& [l, n] : per_layer) layers << " " << l << ":" << n.first << "/" << n.second;
  lines.push_back(layers.str());
  const auto top = [](const std::map<int32_t, int64_t>& m, size_t k) {
    std::vector<std::pair<int64_t, int32_t>> v;
    for (const auto& [key, n] : m) v.push_back({-n, key});
    std::sort(v.begin(), v.end());
    if (v.size() > k) v.resize(k);
    return v;
  };
  std::ostringstream pos;
  pos << "  most flagged positions:";
  for (const auto& [n, p] : top(per_position, 8)) pos << " " << p << " (" << -n << ")";
  lines.push_back(pos.str());
  std::ostringstream toks;
  toks << "  most flagged tokens:";
  for (const auto& [n, t] : top(per_token, 8)) {
    toks << " " << t;
    if (tok && t >= 0 && t < tok->vocab_size()) toks << " '" << tok->piece(t) << "'";
    toks << " (" << -n << ")";
  }
  lines.push_back(toks.str());
  return lines;
}

}  // namespace rotq
