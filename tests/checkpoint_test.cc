// Checkpoint readers and writers: llama2.c v0/v1/v2, HF safetensors (single and sharded, f32/bf16),
// the RoPE permutation, and rejection of malformed files with one clear message.
#include "models/checkpoint.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "models/npy.h"
#include "models/safetensors.h"
#include "models/synth.h"
#include "models/transformer.h"
#include "runner/data/text.h"
#include "solvers/error.h"
#include "tests/test_util.h"

namespace {

using rotq::GlobalTensor;
using rotq::LayerTensor;
using rotq::Model;

const std::string kStories = rotq_test::shared_data("models/stories260K/stories260K.bin");

// `tol` bounds max|a - b| per tensor; with `q8_steps` > 0 the bound is instead that many Q8_0
// steps of the tensor's own max|w|/127 (a per-group scale is never larger than that).
void expect_same_weights(const Model& a, const Model& b, double tol = 0, double q8_steps = 0) {
  ASSERT_EQ(a.weights.layers.size(), b.weights.layers.size());
  auto same = [&](const at::Tensor& x, const at::Tensor& y, const std::string& what) {
    ASSERT_EQ(x.defined(), y.defined()) << what;
    if (!x.defined()) return;
    ASSERT_EQ(x.sizes(), y.sizes()) << what;
    const double bound = q8_steps > 0 ? q8_steps * x.abs().max().item<double>() / 127 + 1e-7 : tol;
    EXPECT_LE((x.to(at::kDouble) - y.to(at::kDouble)).abs().max().item<double>(), bound) << what;
  };
  same(a.weights.embed, b.weights.embed, "embed");
  same(a.weights.final_norm, b.weights.final_norm, "final_norm");
  same(a.weights.lm_head, b.weights.lm_head, "lm_head");
  for (size_t l = 0; l < a.weights.layers.size(); ++l) {
    for (size_t i = 0; i < a.weights.layers[l].tensors.size(); ++i) {
      same(
          a.weights.layers[l].tensors[i], b.weights.layers[l].tensors[i],
          "layer " + std::to_string(l) + " " + rotq::layer_tensor_key(static_cast<LayerTensor>(i)));
    }
  }
}

at::Tensor logits_of(const Model& m, const std::vector<int64_t>& tokens) {
  rotq::Transformer tf(m);
  return tf.logits(tf.hidden_states(at::tensor(tokens, at::kLong).unsqueeze(0))[0]);
}

TEST(Checkpoint, Stories260KLegacyHeader) {
  auto r = rotq::open_checkpoint(kStories);
  const rotq::ModelConfig& c = r->config();
  EXPECT_EQ(r->format(), "llama2c-v0");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.param_count(), 64 * 512 + 64 + 5 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 172 + 128));
}

TEST(Checkpoint, RopePermutationMapsPairsToHalves) {
  // Row (h, 2i) of the interleaved layout goes to (h, i); (h, 2i+1) to (h, i + d/2).
  at::Tensor w = at::arange(2 * 8, at::kFloat).reshape({16, 1});
  at::Tensor p = rotq::permute_interleaved_to_half(w, 2, 8);
  const std::vector<float> want = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(p[i][0].item<float>(), want[i]);
}

// Writes the model in llama2.c's v1 or v2 layout (q/k back in interleaved order), as export.py.
void write_llama2c_versioned(const Model& m, const std::string& path, int version, int group) {
  const rotq::ModelConfig& c = m.config;
  std::ofstream out(path, std::ios::binary);
  auto i32 = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  const uint32_t magic = 0x616b3432;
  out.write(reinterpret_cast<const char*>(&magic), 4);
  i32(version);
  for (int64_t v :
       {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len}) {
    i32(static_cast<int32_t>(v));
  }
  out.put(c.tie_embeddings ? 1 : 0);
  if (version == 2) i32(group);
  while (out.tellp() < 256) out.put(0);
  auto interleave = [&](const at::Tensor& w, int64_t heads) {
    // inverse of permute_interleaved_to_half
    return w.reshape({heads, 2, c.head_dim / 2, c.dim})
        .transpose(1, 2)
        .reshape({heads * c.head_dim, c.dim});
  };
  auto f32 = [&](const at::Tensor& t) {
    at::Tensor x = t.to(at::kFloat).contiguous();
    out.write(static_cast<const char*>(x.data_ptr()), x.numel() * 4);
  };
  auto q80 = [&](const at::Tensor& t) {
    at::Tensor x = t.to(at::kFloat).contiguous().reshape({-1, group});
    at::Tensor scale = x.abs().amax(1) / 127.0;
    at::Tensor q = at::round(x / scale.unsqueeze(1)).to(at::kChar).contiguous();
    out.write(static_cast<const char*>(q.data_ptr()), q.numel());
    f32(scale);
  };
  auto mat = [&](const at::Tensor& t) { version == 2 ? q80(t) : f32(t); };
  const auto& L = m.weights.layers;
  for (auto& l : L) f32(l[LayerTensor::kAttnNorm]);
  for (auto& l : L) f32(l[LayerTensor::kFfnNorm]);
  f32(m.weights.final_norm);
  mat(m.weights.embed);
  for (auto& l : L) mat(interleave(l[LayerTensor::kWq], c.n_heads));
  for (auto& l : L) mat(interleave(l[LayerTensor::kWk], c.n_kv_heads));
  for (auto& l : L) mat(l[LayerTensor::kWv]);
  for (auto& l : L) mat(l[LayerTensor::kWo]);
  for (auto& l : L) mat(l[LayerTensor::kWGate]);
  for (auto& l : L) mat(l[LayerTensor::kWDown]);
  for (auto& l : L) mat(l[LayerTensor::kWUp]);
  if (!c.tie_embeddings) mat(m.weights.lm_head);
}

TEST(Checkpoint, Llama2cVersion1And2ReadBackTheSameModel) {
  rotq_test::TempDir dir;
  Model legacy = rotq::load_model(kStories);
  write_llama2c_versioned(legacy, dir.str("v1.bin"), 1, 0);
  auto r1 = rotq::open_checkpoint(dir.str("v1.bin"));
  EXPECT_EQ(r1->format(), "llama2c-v1");
  expect_same_weights(legacy, rotq::load_model(*r1));
  write_llama2c_versioned(legacy, dir.str("v2.bin"), 2, 64);
  auto r2 = rotq::open_checkpoint(dir.str("v2.bin"));
  EXPECT_EQ(r2->format(), "llama2c-v2");
  Model q8 = rotq::load_model(*r2);
  // Q8_0: error at most half a step of the group's max|w|/127.
  expect_same_weights(legacy, q8, 0, 0.5);
}

TEST(Checkpoint, ConvertedHfDirectoryIsTheSameModel) {
  rotq_test::TempDir dir;
  Model a = rotq::load_model(kStories);
  rotq::save_hf_checkpoint(a, dir.str("hf"));
  auto r = rotq::open_checkpoint(dir.str("hf"));
  EXPECT_EQ(r->format(), "hf");
  Model b = rotq::load_model(*r);
  EXPECT_EQ(b.config.summary(), a.config.summary());
  expect_same_weights(a, b);
  EXPECT_TRUE(b.weights.lm_head.is_same(b.weights.embed)) << "tied embeddings stay tied";
  const std::vector<int64_t> toks = {1, 403, 261, 378, 405, 414, 346, 373, 261, 314};
  EXPECT_TRUE(at::equal(logits_of(a, toks), logits_of(b, toks)));
}

TEST(Checkpoint, ShardedBf16GqaUntiedSyntheticLoadsAndRuns) {
  rotq_test::TempDir dir;
  rotq::ModelConfig cfg = rotq::synth_preset("tiny");
  rotq::apply_dims(cfg, "dim=64,hidden=160,layers=3,heads=8,kv_heads=2,vocab=300,tied=0");
  Model m = rotq::make_synthetic_model(cfg, 11);
  rotq::SaveOptions so;
  so.dtype = "bfloat16";
  so.max_shard_bytes = 100 * 1024;  // forces at least two shards
  rotq::save_hf_checkpoint(m, dir.str("hf"), so);
  ASSERT_TRUE(std::filesystem::exists(dir.str("hf/model.safetensors.index.json")));
  {
    std::ifstream in(dir.str("hf/model.safetensors.index.json"));
    const nlohmann::json index = nlohmann::json::parse(in);
    std::set<std::string> shard_files;
    for (const auto& kv : index["weight_map"].items())
      shard_files.insert(kv.value().get<std::string>());
    ASSERT_GE(shard_files.size(), 2u);
    for (const auto& f : shard_files) EXPECT_TRUE(std::filesystem::exists(dir.str("hf/" + f))) << f;
  }
  auto r = rotq::open_checkpoint(dir.str("hf"));
  EXPECT_EQ(r->config().dtype, "bfloat16");
  EXPECT_EQ(r->layer_tensor(0, LayerTensor::kWq).scalar_type(), at::kBFloat16);
  Model loaded = rotq::load_model(*r);
  // The loaded weights are exactly the bf16 rounding of the originals.
  Model rounded = m;
  rotq::cast_weights(rounded.weights, at::kBFloat16);
  rotq::cast_weights(rounded.weights, at::kFloat);
  expect_same_weights(rounded, loaded);
  EXPECT_FALSE(loaded.weights.lm_head.is_same(loaded.weights.embed));
  const std::vector<int64_t> toks = {1, 5, 77, 299, 12, 8};
  EXPECT_TRUE(at::equal(logits_of(rounded, toks), logits_of(loaded, toks)));
  // And within bf16 rounding of the float32 model's logits.
  at::Tensor ref = logits_of(m, toks);
  EXPECT_LT((logits_of(loaded, toks) - ref).abs().max().item<double>(),
            0.05 * ref.abs().max().item<double>());
}

TEST(Checkpoint, StreamedSynthMatchesInMemorySynth) {
  rotq_test::TempDir dir;
  rotq::ModelConfig cfg = rotq::synth_preset("tiny");
  rotq::apply_dims(cfg, "layers=3,tied=0");
  rotq::SaveOptions so;
  so.max_shard_bytes = 64 * 1024;
  rotq::write_synthetic_checkpoint(cfg, 5, dir.str("s"), so);
  expect_same_weights(rotq::make_synthetic_model(cfg, 5), rotq::load_model(dir.str("s")));
}

TEST(Checkpoint, Llama2cConvertedToBf16HfMatchesWithinRounding) {
  rotq_test::TempDir dir;
  Model a = rotq::load_model(kStories);
  rotq::SaveOptions so;
  so.dtype = "bfloat16";
  so.max_shard_bytes = 300 * 1024;
  rotq::save_hf_checkpoint(a, dir.str("hf"), so);
  Model b = rotq::load_model(dir.str("hf"));
  const std::vector<int64_t> toks = {1, 403, 261, 378, 405, 414, 346, 373};
  at::Tensor la = logits_of(a, toks), lb = logits_of(b, toks);
  EXPECT_LT((la - lb).abs().max().item<double>(), 0.05 * la.abs().max().item<double>());
  EXPECT_TRUE(at::equal(la.argmax(-1), lb.argmax(-1)));
}

// --- malformed inputs ------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected rotq::Error containing '" << needle << "'";
  } catch (const rotq::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
  }
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
}

std::string safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::string s(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(s.data(), &n, 8);
  return s + header + std::string(data_bytes, '\0');
}

TEST(CheckpointErrors, MissingAndTruncatedLlama2c) {
  rotq_test::TempDir dir;
  expect_error([&] { rotq::open_checkpoint(dir.str("nope.bin")); }, "nope.bin");
  const std::string bytes = rotq::read_file_bytes(kStories);
  write_bytes(dir.str("trunc.bin"), bytes.substr(0, bytes.size() / 2));
  expect_error([&] { rotq::open_checkpoint(dir.str("trunc.bin")); }, "truncated");
  write_bytes(dir.str("tiny.bin"), "abc");
  expect_error([&] { rotq::open_checkpoint(dir.str("tiny.bin")); }, "too short");
  write_bytes(dir.str("garbage.bin"), std::string(4096, '\xff'));
  expect_error([&] { rotq::open_checkpoint(dir.str("garbage.bin")); }, "not plausible");
}

TEST(CheckpointErrors, SafetensorsHeadersThatLie) {
  rotq_test::TempDir dir;
  write_bytes(
      dir.str("past.safetensors"),
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}})", 32));
  expect_error([&] { rotq::SafetensorsFile::open(dir.str("past.safetensors")); }, "data section");
  write_bytes(
      dir.str("size.safetensors"),
      safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}})", 64));
  expect_error([&] { rotq::SafetensorsFile::open(dir.str("size.safetensors")); }, "expected 64");
  write_bytes(
      dir.str("dtype.safetensors"),
      safetensors_bytes(R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4));
  expect_error([&] { rotq::SafetensorsFile::open(dir.str("dtype.safetensors")); },
               "unknown dtype F8_E4M3");
  write_bytes(dir.str("json.safetensors"), safetensors_bytes("{not json", 0));
  expect_error([&] { rotq::SafetensorsFile::open(dir.str("json.safetensors")); }, "not valid JSON");
  std::string huge(8, '\0');
  const uint64_t n = 1ull << 40;
  std::memcpy(huge.data(), &n, 8);
  write_bytes(dir.str("len.safetensors"), huge + "{}");
  expect_error([&] { rotq::SafetensorsFile::open(dir.str("len.safetensors")); }, "header length");
}

class HfConfigErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    rotq::ModelConfig cfg = rotq::synth_preset("tiny");
    rotq::write_synthetic_checkpoint(cfg, 1, dir.str("m"), {});
    std::ifstream in(dir.str("m/config.json"));
    config = nlohmann::json::parse(in);
  }
  void write_config(const nlohmann::json& j) {
    std::ofstream(dir.str("m/config.json")) << j.dump();
  }
  rotq_test::TempDir dir;
  nlohmann::json config;
};

TEST_F(HfConfigErrors, MissingField) {
  config.erase("hidden_size");
  write_config(config);
  expect_error([&] { rotq::open_checkpoint(dir.str("m")); }, "missing field hidden_size");
}

TEST_F(HfConfigErrors, UnsupportedArchitecture) {
  config["architectures"] = {"GPT2LMHeadModel"};
  write_config(config);
  expect_error([&] { rotq::open_checkpoint(dir.str("m")); },
               "unsupported architecture 'GPT2LMHeadModel'");
}

TEST_F(HfConfigErrors, WrongTypeAndInconsistentHeads) {
  config["num_hidden_layers"] = "two";
  write_config(config);
  expect_error([&] { rotq::open_checkpoint(dir.str("m")); }, "num_hidden_layers");
  config["num_hidden_layers"] = 2;
  config["num_key_value_heads"] = 3;
  write_config(config);
  expect_error([&] { rotq::open_checkpoint(dir.str("m")); }, "not a multiple");
}

TEST_F(HfConfigErrors, TensorShapeMismatch) {
  config["intermediate_size"] = 100;  // the stored tensors are 172 wide
  write_config(config);
  auto r = rotq::open_checkpoint(dir.str("m"));
  expect_error([&] { rotq::load_model(*r); }, "expected [100, 64]");
}

// .npy: every dtype round-trips bit for bit, the header is NumPy's (length a multiple of 64,
// newline-terminated), and damaged files are refused naming the file.
TEST(Npy, RoundTripsAndRefusesDamagedFiles) {
  rotq_test::TempDir d;
  at::manual_seed(3);
  const std::vector<at::Tensor> tensors = {at::randn({3, 5}),
                                           at::randn({7}, at::kDouble),
                                           at::randint(-9, 9, {2, 3, 4}, at::kLong),
                                           at::rand({4, 4}) > 0.5,
                                           at::randn({0, 6}),
                                           at::randint(0, 255, {5}, at::kByte),
                                           at::randn({2, 2}).to(at::kHalf)};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string path = d.str("t" + std::to_string(i) + ".npy");
    rotq::write_npy(path, tensors[i]);
    const at::Tensor back = rotq::read_npy(path);
    EXPECT_EQ(back.scalar_type(), tensors[i].scalar_type());
    EXPECT_TRUE(at::equal(back, tensors[i])) << i;
    const std::string bytes = rotq::read_file_bytes(path);
    const size_t header = static_cast<unsigned char>(bytes[8]) | (bytes[9] << 8);
    EXPECT_EQ((10 + header) % 64, 0u);
    EXPECT_EQ(bytes[10 + header - 1], '\n');
  }
  // A transposed view is written in C order.
  rotq::write_npy(d.str("t.npy"), tensors[0].t());
  EXPECT_TRUE(at::equal(rotq::read_npy(d.str("t.npy")), tensors[0].t()));
  EXPECT_TRUE(at::equal(rotq::read_tensor_file(d.str("t.npy")), tensors[0].t()));

  const std::string good = rotq::read_file_bytes(d.str("t0.npy"));
  auto refused = [&](const std::string& bytes, const std::string& needle) {
    const std::string path = d.str("bad.npy");
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
    try {
      rotq::read_npy(path);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const rotq::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.npy"), std::string::npos) << e.what();
    }
  };
  refused("not a numpy file", "magic");
  refused(good.substr(0, good.size() - 4), "bytes");
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  refused(fortran, "Fortran");
  std::string big_endian = good;
  big_endian.replace(big_endian.find("<f4"), 3, ">f4");
  refused(big_endian, "dtype");
  EXPECT_THROW(rotq::read_tensor_file(d.str("t.txt")), rotq::Error);
}

}  // namespace
