#include "models/hf_config_keys.h"

#include "solvers/error.h"

namespace rotq {

const std::vector<ConfigKeyRule>& hf_config_key_rules() {
  static const std::vector<ConfigKeyRule> rules = {
      {"architectures", true, "the architecture (LlamaForCausalLM, MistralForCausalLM, Qwen2/3)"},
      {"hidden_size", true, "dim"},
      {"intermediate_size", true, "MLP width"},
      {"num_hidden_layers", true, "layers"},
      {"num_attention_heads", true, "query heads"},
      {"num_key_value_heads", true, "key/value heads (GQA)"},
      {"head_dim", true, "per-head width (Qwen3: not hidden/heads)"},
      {"vocab_size", true, "embedding rows"},
      {"max_position_embeddings", true, "context length"},
      {"rope_theta", true, "RoPE base"},
      {"rope_scaling", true, "linear and llama3 computed; other types refused"},
      {"rms_norm_eps", true, "RMSNorm epsilon"},
      {"tie_word_embeddings", true, "lm_head shares the embedding"},
      {"hidden_act", true, "silu/swish, gelu, gelu_pytorch_tanh/gelu_new, relu; others refused"},
      {"attention_bias", true, "q/k/v/o_proj biases (Llama, Qwen3); refused on Mistral"},
      {"mlp_bias", true, "gate/up/down_proj biases (Llama); refused elsewhere"},
      {"sliding_window", true, "Mistral's window: sequences longer than it are refused"},
      {"use_sliding_window", true, "Qwen2/3: the window applies (then as sliding_window)"},
      {"max_window_layers", true, "Qwen2/3: which layers slide (a window applies to all in rotq)"},
      {"layer_types", true, "full_attention per layer; sliding_attention needs sliding_window"},
      {"torch_dtype", true, "informative: the storage dtype is read from the tensors"},
      {"bos_token_id", true, "recorded; the tokenizer's own BOS policy decides"},
      {"eos_token_id", true, "generation stops at it (the first of a list)"},
      {"rotq_online_hadamard", true, "a rotated checkpoint's online R3/R4"},
      {"model_type", false, "checked against the architecture's family"},
      {"transformers_version", false, "provenance"},
      {"_name_or_path", false, "provenance"},
      {"use_cache", false, "KV caching during generation only"},
      {"initializer_range", false, "training-time initialisation"},
      {"attention_dropout", false, "dropout is off at inference"},
      {"pretraining_tp", false, "splits the same matmuls into slices"},
      {"pad_token_id", false, "padding id; rotq masks by length"},
      {"_attn_implementation", false, "kernel choice, same function"},
      {"attn_implementation", false, "kernel choice, same function"},
      {"output_attentions", false, "extra outputs"},
      {"output_hidden_states", false, "extra outputs"},
      {"return_dict", false, "output container"},
      {"torchscript", false, "export flag"},
      {"use_bfloat16", false, "legacy TF flag"},
      {"tf_legacy_loss", false, "training loss"},
      {"chunk_size_feed_forward", false, "chunked MLP, same function"},
      {"is_decoder", false, "decoder-only models are decoders"},
      {"is_encoder_decoder", false, "must be false"},
      {"add_cross_attention", false, "must be false"},
      {"tie_encoder_decoder", false, "encoder-decoder only"},
      {"cross_attention_hidden_size", false, "encoder-decoder only"},
      {"pruned_heads", false, "must be empty"},
      {"finetuning_task", false, "metadata"},
      {"id2label", false, "classification heads only"},
      {"label2id", false, "classification heads only"},
      {"problem_type", false, "classification heads only"},
      {"task_specific_params", false, "metadata"},
      {"tokenizer_class", false, "the tokenizer is read from its own files"},
      {"prefix", false, "metadata"},
      {"sep_token_id", false, "special token ids"},
      {"decoder_start_token_id", false, "encoder-decoder only"},
      {"max_length", false, "generation default"},
      {"min_length", false, "generation default"},
      {"do_sample", false, "generation default"},
      {"early_stopping", false, "generation default"},
      {"num_beams", false, "generation default"},
      {"num_beam_groups", false, "generation default"},
      {"diversity_penalty", false, "generation default"},
      {"temperature", false, "generation default"},
      {"top_k", false, "generation default"},
      {"top_p", false, "generation default"},
      {"typical_p", false, "generation default"},
      {"repetition_penalty", false, "generation default"},
      {"length_penalty", false, "generation default"},
      {"no_repeat_ngram_size", false, "generation default"},
      {"encoder_no_repeat_ngram_size", false, "generation default"},
      {"bad_words_ids", false, "generation default"},
      {"num_return_sequences", false, "generation default"},
      {"output_scores", false, "generation default"},
      {"return_dict_in_generate", false, "generation default"},
      {"forced_bos_token_id", false, "generation default"},
      {"forced_eos_token_id", false, "generation default"},
      {"remove_invalid_values", false, "generation default"},
      {"exponential_decay_length_penalty", false, "generation default"},
      {"suppress_tokens", false, "generation default"},
      {"begin_suppress_tokens", false, "generation default"},
  };
  return rules;
}

namespace {

bool is_false_or_null(const nlohmann::json& v) { return v.is_null() || v == false; }

// What a harmless key's value must be for it to stay harmless.
void require_harmless_value(const std::string& key, const nlohmann::json& v,
                            const std::string& path) {
  if ((key == "is_encoder_decoder" || key == "add_cross_attention") && !is_false_or_null(v)) {
    fail(path, ": ", key, " = ", v.dump(), ": rotq computes decoder-only LLaMA-family models");
  }
  if (key == "pruned_heads" && !(v.is_null() || v.empty())) {
    fail(path, ": pruned_heads = ", v.dump().substr(0, 60),
         ": pruned attention heads are not computed by rotq");
  }
}

}  // namespace

void require_known_config_keys(const nlohmann::json& config, const std::string& path) {
  for (const auto& [key, value] : config.items()) {
    const ConfigKeyRule* rule = nullptr;
    for (const ConfigKeyRule& r : hf_config_key_rules()) {
      if (key == r.key) rule = &r;
    }
    if (key == "quantization_config") {
      fail(path, ": quantization_config: an already-quantized checkpoint (",
           value.dump().substr(0, 60), "); rotq reads floating-point weights");
    }
    if (key == "auto_map") {
      fail(path, ": auto_map: the model needs its own remote code (", value.dump().substr(0, 60),
           "); rotq computes only the architectures it implements");
    }
    if (rule == nullptr) {
      fail(path, ": config key '", key, "' (= ", value.dump().substr(0, 60),
           ") is neither computed by rotq nor known to leave the model's function unchanged; "
           "refusing rather than ignoring it (README: config fields)");
    }
    if (!rule->computed) require_harmless_value(key, value, path);
  }
}

}  // namespace rotq
