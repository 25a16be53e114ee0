// The allocator settings rotq's own main() uses (runner/cli/main.cc): freed memory stays in the
// heap, because on these VMs every fresh page costs ~15 us to fault in and glibc would serve each
// large temporary with a fresh mmap. Without this the test binaries spend more time in the kernel
// than in arithmetic.
#include <malloc.h>

namespace {
const bool kKeepFreedMemoryInHeap = [] {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();
}  // namespace
