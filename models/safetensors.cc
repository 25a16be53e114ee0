#include "models/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/base/files.h"
#include "solvers/error.h"

namespace rotq {
namespace {

using json = nlohmann::json;

// A header larger than this is not a real checkpoint header (HF caps it at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

int64_t element_bytes(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

SafetensorInfo parse_entry(const std::string& path, const std::string& name, const json& e,
                           uint64_t data_bytes) {
  const std::string where = path + ": tensor " + name;
  require(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
          where, ": header entry needs dtype, shape and data_offsets");
  SafetensorInfo info;
  require(e["dtype"].is_string(), where, ": dtype is not a string");
  info.dtype = e["dtype"].get<std::string>();
  const int64_t esize = element_bytes(info.dtype);
  require(esize > 0, where, ": unknown dtype ", info.dtype,
          " (expected F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL)");
  require(e["shape"].is_array(), where, ": shape is not an array");
  uint64_t numel = 1;
  for (const json& d : e["shape"]) {
    require(d.is_number_integer() && d.get<int64_t>() >= 0, where, ": bad shape ",
            e["shape"].dump());
    info.shape.push_back(d.get<int64_t>());
    // A product that overflows could wrap to the byte count of a small tensor: refuse it.
    require(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d.get<int64_t>()), &numel) &&
                numel <= (uint64_t{1} << 48),
            where, ": shape ", e["shape"].dump(), " has more elements than any file can hold");
  }
  const json& off = e["data_offsets"];
  require(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
              off[1].is_number_unsigned(),
          where, ": data_offsets must be two non-negative integers");
  info.begin = off[0].get<uint64_t>();
  info.end = off[1].get<uint64_t>();
  require(info.begin <= info.end, where, ": data_offsets [", info.begin, ", ", info.end,
          "] are reversed");
  require(info.end <= data_bytes, where, ": data ends at byte ", info.end,
          " but the data section has only ", data_bytes, " bytes (truncated file or lying header)");
  require(info.end - info.begin == numel * static_cast<uint64_t>(esize), where, ": ",
          info.end - info.begin, " bytes for shape ", e["shape"].dump(), " of ", info.dtype,
          ", expected ", numel * esize);
  return info;
}

// Tensors own disjoint byte ranges: two that overlap would alias one another's data (a writer
// bug or a crafted file), and in-place edits of one would silently change the other.
void check_disjoint(const std::string& path, const std::map<std::string, SafetensorInfo>& infos) {
  std::vector<std::pair<const std::string*, const SafetensorInfo*>> by_start;
  for (const auto& [name, info] : infos) {
    if (info.end > info.begin) by_start.push_back({&name, &info});
  }
  std::sort(by_start.begin(), by_start.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_start.size(); ++i) {
    const auto& [prev_name, prev] = by_start[i - 1];
    const auto& [name, info] = by_start[i];
    require(info->begin >= prev->end, path, ": tensors ", *prev_name, " [", prev->begin, ", ",
            prev->end, ") and ", *name, " [", info->begin, ", ", info->end,
            ") overlap (expected disjoint data_offsets)");
  }
}

}  // namespace

at::ScalarType safetensors_dtype_to_scalar(const std::string& dtype, const std::string& what) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "F64") return at::kDouble;
  if (dtype == "I64") return at::kLong;
  if (dtype == "I32") return at::kInt;
  if (dtype == "I16") return at::kShort;
  if (dtype == "I8") return at::kChar;
  if (dtype == "U8") return at::kByte;
  if (dtype == "BOOL") return at::kBool;
  fail(what, ": unsupported safetensors dtype ", dtype);
}

std::string scalar_to_safetensors_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "F32";
    case at::kHalf:
      return "F16";
    case at::kBFloat16:
      return "BF16";
    case at::kDouble:
      return "F64";
    case at::kLong:
      return "I64";
    case at::kInt:
      return "I32";
    case at::kShort:
      return "I16";
    case at::kChar:
      return "I8";
    case at::kByte:
      return "U8";
    case at::kBool:
      return "BOOL";
    default:
      fail("safetensors: cannot store dtype ", c10::toString(t));
  }
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>();
  f->file_ = MappedFile::open(path);
  const uint64_t size = f->file_->size();
  require(size >= 8, path, ": ", size, " bytes is too short for a safetensors file");
  uint64_t header_len = 0;
  std::memcpy(&header_len, f->file_->data(), 8);  // little-endian on every platform we run on
  require(header_len <= kMaxHeaderBytes && 8 + header_len <= size, path, ": header length ",
          header_len, " exceeds the file size ", size);
  json header;
  try {
    header = json::parse(f->file_->data() + 8, f->file_->data() + 8 + header_len);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON (", e.what(), ")");
  }
  require(header.is_object(), path, ": header is not a JSON object");
  f->data_start_ = 8 + header_len;
  const uint64_t data_bytes = size - f->data_start_;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      require(it.value().is_object(), path, ": __metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (m.value().is_string()) f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    f->infos_[it.key()] = parse_entry(path, it.key(), it.value(), data_bytes);
  }
  check_disjoint(path, f->infos_);
  return f;
}

const SafetensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  require(it != infos_.end(), path(), ": no tensor named ", name);
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : infos_) out.push_back(kv.first);
  return out;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorInfo& in = info(name);
  const at::ScalarType st = safetensors_dtype_to_scalar(in.dtype, path() + ": tensor " + name);
  const uint8_t* ptr = file_->data() + data_start_ + in.begin;
  const auto opts = at::TensorOptions().dtype(st);
  const size_t esize = static_cast<size_t>(element_bytes(in.dtype));
  if (in.end == in.begin) return at::empty(in.shape, opts);
  if (reinterpret_cast<uintptr_t>(ptr) % esize != 0) {
    // Misaligned data cannot back a typed view; copy it out.
    at::Tensor t = at::empty(in.shape, opts);
    std::memcpy(t.data_ptr(), ptr, in.end - in.begin);
    return t;
  }
  auto keep = file_;  // the view keeps the mapping alive
  return at::from_blob(
      const_cast<uint8_t*>(ptr), in.shape, [keep](void*) {}, opts);
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<at::Tensor> contiguous;
  for (const auto& [name, t] : tensors) {
    require(t.defined(), path, ": tensor ", name, " is undefined");
    at::Tensor c = t.to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", scalar_to_safetensors_dtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    contiguous.push_back(std::move(c));
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // keeps the data section aligned
  AtomicFileWriter out(path);
  const uint64_t len = text.size();
  out.write(std::string_view(reinterpret_cast<const char*>(&len), 8));
  out.write(text);
  for (const at::Tensor& c : contiguous) {
    out.write(std::string_view(static_cast<const char*>(c.data_ptr()),
                               static_cast<size_t>(c.numel() * c.element_size())));
  }
  out.commit();
}

}  // namespace rotq
