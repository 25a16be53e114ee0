// A read-only memory mapping of a whole file. Tensors that view it hold a shared_ptr to it, so
// pages are read lazily, on first touch, and unmapped when the last view dies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rotq {

class MappedFile {
 public:
  // Throws rotq::Error naming `path` when it is missing, a directory, or cannot be mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace rotq
