// Safetensors files: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets}}, then the raw bytes. Reading maps the file and hands out zero-copy tensor views
// (pages load lazily); every header field is checked against the file before it is trusted.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/mapped_file.h"

namespace rotq {

struct SafetensorInfo {
  std::string dtype;  // safetensors name: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Throws rotq::Error naming the file and the offending tensor for any inconsistent header.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  bool has(const std::string& name) const { return infos_.count(name) != 0; }
  const SafetensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

  // A view of the tensor's bytes in its stored dtype (copied only when misaligned).
  at::Tensor tensor(const std::string& name) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  uint64_t data_start_ = 0;
  std::map<std::string, SafetensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any supported dtype, CPU) to `path` atomically (temp file + rename).
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

at::ScalarType safetensors_dtype_to_scalar(const std::string& dtype, const std::string& what);
std::string scalar_to_safetensors_dtype(at::ScalarType t);

}  // namespace rotq
