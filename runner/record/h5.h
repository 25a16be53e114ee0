// A thin RAII layer over HDF5's C API: files, groups, scalar attributes (strings, numbers) and 1-D
// float64 datasets, with errors as rotq::Error naming the file and the object (HDF5's own error
// stack printing is switched off).
#pragma once

#include <hdf5.h>

#include <string>
#include <vector>

namespace rotq::h5 {

// An open HDF5 object id, closed with the right H5*close when it goes.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();
  hid_t id() const { return id_; }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

Handle create_file(const std::string& path);  // truncates
// A file held in memory (HDF5's core driver, no backing store): HDF5 never writes to disk, so a
// full disk cannot leave its library state half-flushed; file_image gives the bytes to store.
Handle create_memory_file();
std::string file_image(const Handle& file);
Handle open_file(const std::string& path);  // read-only
Handle create_group(const Handle& parent, const std::string& name);
Handle open_group(const Handle& parent, const std::string& name);
bool has_child(const Handle& parent, const std::string& name);
std::vector<std::string> children(const Handle& group);
std::vector<std::string> attribute_names(const Handle& obj);

void set_string(const Handle& obj, const std::string& name, const std::string& value);
void set_double(const Handle& obj, const std::string& name, double value);
void set_int(const Handle& obj, const std::string& name, int64_t value);
std::string get_string(const Handle& obj, const std::string& name);
double get_double(const Handle& obj, const std::string& name);
int64_t get_int(const Handle& obj, const std::string& name);
// The attribute's class: H5T_STRING, H5T_FLOAT, H5T_INTEGER.
H5T_class_t attribute_class(const Handle& obj, const std::string& name);

// A float64 dataset of shape `dims` (one dimension: v.size()) holding v in row-major order.
void write_doubles(const Handle& parent, const std::string& name, const std::vector<double>& v,
                   std::vector<uint64_t> dims = {});
std::vector<double> read_doubles(const Handle& parent, const std::string& name);

// Flushes the file's buffers to the operating system.
void flush(const Handle& file);

// "1.10.8"
std::string library_version();

}  // namespace rotq::h5
