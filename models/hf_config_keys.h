// Every key of a Hugging Face config.json is either computed by rotq or known not to change what
// the model computes at inference; anything else is refused, so a checkpoint that means something
// rotq does not compute (a quantization_config, remote code, encoder-decoder wiring, a new
// attention variant) fails with one line instead of loading as a plain LLaMA.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace rotq {

struct ConfigKeyRule {
  const char* key;
  bool computed;     // read into ModelConfig (else: accepted, does not change the function)
  const char* note;  // why a harmless key is harmless, or what a computed one sets
};

// The table, in the README's order.
const std::vector<ConfigKeyRule>& hf_config_key_rules();

// Throws rotq::Error naming `path` and the first key of `config` that is neither computed nor
// known to be harmless, or a harmless key whose value would make it harmful (e.g.
// is_encoder_decoder: true).
void require_known_config_keys(const nlohmann::json& config, const std::string& path);

}  // namespace rotq
