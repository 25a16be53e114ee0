#include "runner/record/h5.h"

#include "solvers/error.h"

namespace rotq::h5 {
namespace {

struct Quiet {
  Quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};

void quiet() { static Quiet q; }

hid_t checked(hid_t id, const std::string& what) {
  require(id >= 0, "HDF5: ", what);
  return id;
}

void checked_status(herr_t s, const std::string& what) { require(s >= 0, "HDF5: ", what); }

std::string object_name(const Handle& obj) {
  const ssize_t n = H5Iget_name(obj.id(), nullptr, 0);
  if (n <= 0) return "?";
  std::string s(static_cast<size_t>(n), '\0');
  H5Iget_name(obj.id(), s.data(), static_cast<size_t>(n) + 1);
  return s;
}

Handle scalar_space() { return Handle(checked(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose); }

Handle string_type() {
  Handle t(checked(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  checked_status(H5Tset_size(t.id(), H5T_VARIABLE), "H5Tset_size");
  checked_status(H5Tset_cset(t.id(), H5T_CSET_UTF8), "H5Tset_cset");
  return t;
}

Handle new_attribute(const Handle& obj, const std::string& name, hid_t type) {
  if (H5Aexists(obj.id(), name.c_str()) > 0) H5Adelete(obj.id(), name.c_str());
  const Handle space = scalar_space();
  return Handle(
      checked(H5Acreate2(obj.id(), name.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT),
              "cannot create attribute '" + name + "' on " + object_name(obj)),
      H5Aclose);
}

Handle open_attribute(const Handle& obj, const std::string& name) {
  return Handle(checked(H5Aopen(obj.id(), name.c_str(), H5P_DEFAULT),
                        "no attribute '" + name + "' on " + object_name(obj)),
                H5Aclose);
}

herr_t collect_link(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

herr_t collect_attr(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

}  // namespace

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0 && close_) close_(id_);
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

Handle::~Handle() {
  if (id_ >= 0 && close_) close_(id_);
}

Handle create_file(const std::string& path) {
  quiet();
  return Handle(checked(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                        "cannot create " + path),
                H5Fclose);
}

Handle create_memory_file() {
  quiet();
  const Handle fapl(checked(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
  checked_status(H5Pset_fapl_core(fapl.id(), 1 << 20, /*backing_store=*/0), "H5Pset_fapl_core");
  return Handle(checked(H5Fcreate("rotq-in-memory.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id()),
                        "cannot create an in-memory file"),
                H5Fclose);
}

std::string file_image(const Handle& file) {
  checked_status(H5Fflush(file.id(), H5F_SCOPE_GLOBAL), "flush of an in-memory file");
  const ssize_t n = H5Fget_file_image(file.id(), nullptr, 0);
  require(n > 0, "HDF5: cannot size the in-memory file's image");
  std::string bytes(static_cast<size_t>(n), '\0');
  require(H5Fget_file_image(file.id(), bytes.data(), bytes.size()) == n,
          "HDF5: cannot copy the in-memory file's image");
  return bytes;
}

Handle open_file(const std::string& path) {
  quiet();
  return Handle(checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT),
                        path + " is not a readable HDF5 file"),
                H5Fclose);
}

Handle create_group(const Handle& parent, const std::string& name) {
  return Handle(
      checked(H5Gcreate2(parent.id(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              "cannot create group '" + name + "' in " + object_name(parent)),
      H5Gclose);
}

Handle open_group(const Handle& parent, const std::string& name) {
  return Handle(checked(H5Gopen2(parent.id(), name.c_str(), H5P_DEFAULT),
                        "no group '" + name + "' in " + object_name(parent)),
                H5Gclose);
}

bool has_child(const Handle& parent, const std::string& name) {
  return H5Lexists(parent.id(), name.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> children(const Handle& group) {
  std::vector<std::string> out;
  checked_status(H5Literate(group.id(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_link, &out),
                 "cannot list " + object_name(group));
  return out;
}

std::vector<std::string> attribute_names(const Handle& obj) {
  std::vector<std::string> out;
  checked_status(H5Aiterate2(obj.id(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attr, &out),
                 "cannot list the attributes of " + object_name(obj));
  return out;
}

void set_string(const Handle& obj, const std::string& name, const std::string& value) {
  const Handle type = string_type();
  const Handle a = new_attribute(obj, name, type.id());
  const char* p = value.c_str();
  checked_status(H5Awrite(a.id(), type.id(), &p), "cannot write attribute '" + name + "'");
}

void set_double(const Handle& obj, const std::string& name, double value) {
  const Handle a = new_attribute(obj, name, H5T_IEEE_F64LE);
  checked_status(H5Awrite(a.id(), H5T_NATIVE_DOUBLE, &value),
                 "cannot write attribute '" + name + "'");
}

void set_int(const Handle& obj, const std::string& name, int64_t value) {
  const Handle a = new_attribute(obj, name, H5T_STD_I64LE);
  checked_status(H5Awrite(a.id(), H5T_NATIVE_INT64, &value),
                 "cannot write attribute '" + name + "'");
}

H5T_class_t attribute_class(const Handle& obj, const std::string& name) {
  const Handle a = open_attribute(obj, name);
  const Handle t(checked(H5Aget_type(a.id()), "H5Aget_type"), H5Tclose);
  return H5Tget_class(t.id());
}

std::string get_string(const Handle& obj, const std::string& name) {
  const Handle a = open_attribute(obj, name);
  const Handle type = string_type();
  char* p = nullptr;
  checked_status(H5Aread(a.id(), type.id(), &p),
                 "attribute '" + name + "' of " + object_name(obj) + " is not a string");
  std::string s = p ? p : "";
  const Handle space = scalar_space();
  H5Dvlen_reclaim(type.id(), space.id(), H5P_DEFAULT, &p);
  return s;
}

double get_double(const Handle& obj, const std::string& name) {
  const Handle a = open_attribute(obj, name);
  double v = 0;
  checked_status(H5Aread(a.id(), H5T_NATIVE_DOUBLE, &v),
                 "attribute '" + name + "' of " + object_name(obj) + " is not a number");
  return v;
}

int64_t get_int(const Handle& obj, const std::string& name) {
  const Handle a = open_attribute(obj, name);
  int64_t v = 0;
  checked_status(H5Aread(a.id(), H5T_NATIVE_INT64, &v),
                 "attribute '" + name + "' of " + object_name(obj) + " is not an integer");
  return v;
}

void write_doubles(const Handle& parent, const std::string& name, const std::vector<double>& v,
                   std::vector<uint64_t> dims) {
  if (dims.empty()) dims = {v.size()};
  std::vector<hsize_t> shape(dims.begin(), dims.end());
  hsize_t n = 1;
  for (hsize_t d : shape) n *= d;
  require(n == v.size(), "HDF5: dataset '", name, "' has ", v.size(), " values for its shape");
  const Handle space(
      checked(H5Screate_simple(static_cast<int>(shape.size()), shape.data(), nullptr),
              "H5Screate_simple"),
      H5Sclose);
  const Handle d(checked(H5Dcreate2(parent.id(), name.c_str(), H5T_IEEE_F64LE, space.id(),
                                    H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                         "cannot create dataset '" + name + "'"),
                 H5Dclose);
  if (n > 0) {
    checked_status(H5Dwrite(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()),
                   "cannot write dataset '" + name + "'");
  }
}

std::vector<double> read_doubles(const Handle& parent, const std::string& name) {
  const Handle d(checked(H5Dopen2(parent.id(), name.c_str(), H5P_DEFAULT),
                         "no dataset '" + name + "' in " + object_name(parent)),
                 H5Dclose);
  const Handle space(checked(H5Dget_space(d.id()), "H5Dget_space"), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.id());
  std::vector<double> v(static_cast<size_t>(std::max<hssize_t>(0, n)));
  if (!v.empty()) {
    checked_status(H5Dread(d.id(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()),
                   "cannot read dataset '" + name + "'");
  }
  return v;
}

void flush(const Handle& file) { checked_status(H5Fflush(file.id(), H5F_SCOPE_GLOBAL), "flush"); }

std::string library_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}

}  // namespace rotq::h5
