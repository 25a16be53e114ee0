// What this machine can hold, checked before a command asks for it: sizes computed from a
// config are refused with one line (naming the size and what there is) instead of failing inside
// an allocator or filling the disk halfway.
#pragma once

#include <cstdint>
#include <string>

namespace rotq {

// Physical memory of this machine in bytes (0 when unknown).
uint64_t physical_memory_bytes();
// Free bytes on the file system that holds `path` (or its nearest existing ancestor).
uint64_t free_disk_bytes(const std::string& path);

// rotq::Error "WHAT needs X GiB, more than this machine's Y GiB of memory (HINT)".
void require_memory(double bytes, const std::string& what, const std::string& hint);
// rotq::Error "WHAT needs X GiB, but PATH's file system has Y GiB free".
void require_disk_space(const std::string& path, double bytes, const std::string& what);

// "12.3 GiB"
std::string gib_text(double bytes);

}  // namespace rotq
