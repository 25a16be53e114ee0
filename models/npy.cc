#include "models/npy.h"

#include <ATen/ATen.h>

#include <cstring>
#include <map>
#include <regex>
#include <vector>

#include "models/base/files.h"
#include "models/safetensors.h"
#include "solvers/error.h"

namespace rotq {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

const std::map<std::string, at::ScalarType>& dtypes() {
  static const std::map<std::string, at::ScalarType> m = {
      {"<f4", at::kFloat}, {"<f8", at::kDouble}, {"<f2", at::kHalf},
      {"<i8", at::kLong},  {"<i4", at::kInt},    {"<i2", at::kShort},
      {"|i1", at::kChar},  {"|u1", at::kByte},   {"|b1", at::kBool}};
  return m;
}

std::string descr_of(at::ScalarType t, const std::string& path) {
  for (const auto& [d, s] : dtypes()) {
    if (s == t) return d;
  }
  fail(path, ": cannot write dtype ", t, " as .npy (expected one of f2/f4/f8/i1/i2/i4/i8/u1/b1)");
}

// The value of 'key' in the header's Python dict literal, as the raw text after the colon.
std::string header_field(const std::string& header, const std::string& key,
                         const std::string& path) {
  const std::regex re("['\"]" + key + "['\"]\\s*:\\s*('[^']*'|\"[^\"]*\"|True|False|\\([^)]*\\))");
  std::smatch m;
  require(std::regex_search(header, m, re), path, ": .npy header has no '", key, "' field");
  std::string v = m[1].str();
  if (!v.empty() && (v.front() == '\'' || v.front() == '"')) v = v.substr(1, v.size() - 2);
  return v;
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& path) {
  std::vector<int64_t> shape;
  const std::regex num("-?[0-9]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), num); it != std::sregex_iterator();
       ++it) {
    const int64_t v = std::stoll(it->str());
    require(v >= 0, path, ": .npy shape ", text, " has a negative dimension");
    shape.push_back(v);
  }
  return shape;
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  const std::string bytes = read_file_bytes(path);
  require(bytes.size() >= 10 && std::memcmp(bytes.data(), kMagic, 6) == 0, path,
          ": not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  require(major >= 1 && major <= 3, path, ": unsupported .npy format version ", major);
  const size_t len_bytes = major == 1 ? 2 : 4;
  require(bytes.size() >= 8 + len_bytes, path, ": truncated .npy header");
  uint64_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i) {
    header_len |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
  }
  const size_t data_start = 8 + len_bytes + header_len;
  require(data_start <= bytes.size(), path, ": truncated .npy header");
  const std::string header = bytes.substr(8 + len_bytes, header_len);
  const std::string descr = header_field(header, "descr", path);
  const auto dt = dtypes().find(descr);
  require(dt != dtypes().end(), path, ": .npy dtype '", descr,
          "' is not supported (expected little-endian f2/f4/f8/i1/i2/i4/i8/u1/b1)");
  require(header_field(header, "fortran_order", path) == "False", path,
          ": Fortran-order .npy arrays are not supported (save with np.ascontiguousarray)");
  const std::vector<int64_t> shape = parse_shape(header_field(header, "shape", path), path);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dt->second));
  const size_t need = static_cast<size_t>(t.numel()) * t.element_size();
  require(bytes.size() - data_start == need, path, ": .npy data has ", bytes.size() - data_start,
          " bytes, the header's shape and dtype need ", need);
  if (need > 0) std::memcpy(t.data_ptr(), bytes.data() + data_start, need);
  return t;
}

void write_npy(const std::string& path, const at::Tensor& t) {
  require(t.defined() && t.device().is_cpu(), path, ": write_npy needs a defined CPU tensor");
  const at::Tensor c = t.contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < c.dim(); ++i) shape += std::to_string(c.size(i)) + ", ";
  if (c.dim() > 1) shape.resize(shape.size() - 2);
  if (c.dim() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '" + descr_of(c.scalar_type(), path) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic, version 1.0, the length, then the header padded with spaces to a multiple of 64 and
  // ended by a newline, as NumPy writes it.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  AtomicFileWriter w(path);
  w.write(out);
  w.write(std::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size()));
  w.commit();
}

at::Tensor read_tensor_file(const std::string& path, const std::string& name) {
  const auto ends_with = [&](const std::string& s) {
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with(".npy")) return read_npy(path);
  require(ends_with(".safetensors"), path, ": expected a .npy or .safetensors file");
  const auto f = SafetensorsFile::open(path);
  const std::vector<std::string> names = f->names();
  if (name.empty()) {
    require(names.size() == 1, path, ": holds ", names.size(),
            " tensors; name the one to read (file.safetensors:NAME)");
    return f->tensor(names[0]).clone();
  }
  require(f->has(name), path, ": has no tensor '", name, "'");
  return f->tensor(name).clone();
}

}  // namespace rotq
