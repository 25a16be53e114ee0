#!/usr/bin/env bash
# Installs the Debian packages rotq builds against, skipping the ones already present,
# so that repeated runs cost a dpkg query and nothing else.
set -euo pipefail

ROTQ_DEB_PACKAGES=(
  cmake g++ ninja-build pkg-config
  libtorch-dev libopenblas0-pthread        # OpenBLAS is only "recommended" by libtorch: without it GEMMs fall back to the reference BLAS (~25x slower)
  libopenmpi-dev openmpi-bin
  libyaml-cpp-dev libhdf5-dev libspdlog-dev libgtest-dev libcli11-dev nlohmann-json3-dev
  sentencepiece python3-sentencepiece       # spm_encode and the Python bindings: independent references for the tokenizer tests
  slurm-wlm                                 # a real single-node Slurm cluster for the submission tests
  python3-matplotlib                        # rotq inspect draws its PNGs with scripts/plot_inspect.py
  clang-format                              # the style test (tests/format_check.sh)
  libpcre2-dev libutf8proc-dev              # tokenizer.json: the pre-tokenizer's Unicode regexes (PCRE2, UTF + UCP, JIT) and NFC
)

missing=()
for pkg in "${ROTQ_DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "rotq: installing ${#missing[@]} Debian package(s): ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
