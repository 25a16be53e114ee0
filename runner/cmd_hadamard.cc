// placeholder: rotq hadamard (being written)
#include "runner/cmd_common.h"

namespace rotq {
void register_hadamard(CLI::App& app, Runtime& rt) {}
}  // namespace rotq
