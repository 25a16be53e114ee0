// llama2.c's tokenizer.bin: int32 max_token_length, then per token a float32 score, an int32 byte
// length and the piece's bytes (little-endian). Written by llama2.c's tokenizer.py from a
// SentencePiece BPE model: U+2581 replaced by ' ', BOS/EOS stored as "\n<s>\n" / "\n</s>\n", and
// ids 0, 1, 2 = <unk>, <s>, </s>, then the 256 byte pieces <0x00>..<0xFF> at ids 3..258. The file
// does not record the vocabulary size, nor piece types: these follow from that fixed layout.
//
// Encoding equals llama2.c's encode() (dummy-prefix " " token, codepoint lookup with byte
// fallback, greedy best-score merges) token for token, and hence SentencePiece's encoding with the
// model it was exported from, except where llama2.c itself differs: a literal U+2581 in the text
// is an ordinary character (SentencePiece reads it as a space), and malformed UTF-8 bytes fall
// back to their own byte pieces (SentencePiece encodes U+FFFD instead). piece() returns the
// file's bytes (spaces as ' ').
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "models/tokenizers/bpe.h"
#include "models/tokenizers/tokenizer.h"

namespace rotq {

// Parses tokenizer.bin bytes. `vocab_size_hint` >= 0 reads exactly that many tokens and rejects
// trailing bytes; -1 reads to the end of the data. Throws rotq::Error naming `path`.
BpeVocab llama2c_vocab(std::string_view bytes, int32_t vocab_size_hint, const std::string& path);

// llama2c_vocab + BpeTokenizer of kind "llama2c-bin".
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(std::string_view bytes, int32_t vocab_size_hint,
                                                  const std::string& path);

// Whether `bytes` open with a plausible max_token_length (1 .. 65536), as tokenizer.bin does.
bool looks_like_llama2c_tokenizer(std::string_view bytes);

}  // namespace rotq
