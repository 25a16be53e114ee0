#!/usr/bin/env bash
# Builds rotq with CUDA/NCCL on the GPU machine (Ubuntu, CUDA under /usr/local/cuda, PyTorch in
# python3, no package registry). Run THERE from the repository root, after
# scripts/device_fetch_debs.sh has filled .device/debs/ here and .device has been carried over:
#
#   bash scripts/device_build.sh                 # unpack, env, MPI smoke test, configure, build
#   bash scripts/device_build.sh --prepare-only  # stop after the MPI smoke test (no torch/CUDA needed)
#   bash scripts/device_build.sh --configure-only
#   bash scripts/device_build.sh -- -DFOO=bar    # extra arguments for the CMake configure step
#
# Afterwards:  source /tmp/rotq-sysroot/env.sh && ctest --test-dir build-cuda --output-on-failure
#
# The Debian 12 .debs are unpacked with `dpkg -x` into $ROTQ_SYSROOT (never into /). Debian's
# Open MPI 4.1 is relocated at run time: OPAL_PREFIX moves everything configured relative to
# ${prefix} (bindir, libdir = ${prefix}/lib/x86_64-linux-gnu/openmpi/lib, pkglibdir = the MCA
# plugins in .../openmpi/lib/openmpi3, pkgdatadir = help files); Debian's sysconfdir (/etc/openmpi)
# is absolute, hence OPAL_SYSCONFDIR. The external PMIx 4 (libpmix.so.2) was configured with
# absolute dirs (/usr/lib/x86_64-linux-gnu/pmix2/...): PMIX_PREFIX does not move them, PMIX_DESTDIR
# (prepended to every dir) does, and its pmix-mca-params.conf hard-codes the plugin path (rewritten).
#
# Knobs (environment): ROTQ_SYSROOT (/tmp/rotq-sysroot), ROTQ_BUILD_DIR (build-cuda), ROTQ_JOBS (16),
# ROTQ_BUILD_TARGETS (all),
# ROTQ_CUDA_ARCH (90), CUDA_HOME (/usr/local/cuda), PYTHON (python3), ROTQ_SKIP_MPI_SMOKE (0),
# ROTQ_FMT_SHIM (1: put Debian's fmt 9 / nlohmann headers ahead of torch/include, see stage 2).
set -euo pipefail

S=${ROTQ_SYSROOT:-/tmp/rotq-sysroot}
BUILD_DIR=${ROTQ_BUILD_DIR:-build-cuda}
JOBS=${ROTQ_JOBS:-16}
CUDA_ARCH=${ROTQ_CUDA_ARCH:-90}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PYTHON=${PYTHON:-python3}
FMT_SHIM=${ROTQ_FMT_SHIM:-1}
DEBS=.device/debs
ARCH_TRIPLET=x86_64-linux-gnu
L=$S/usr/lib/$ARCH_TRIPLET

mode=all
extra_cmake=()
while (($#)); do
  case "$1" in
    --prepare-only) mode=prepare ;;
    --configure-only) mode=configure ;;
    --) shift; extra_cmake=("$@"); break ;;
    *) echo "device_build: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

T0=$SECONDS
stage() { printf '\n=== [device_build %4ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() { echo "device_build: ERROR: $*" >&2; exit 1; }
trap 'echo "=== [device_build] FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

[[ -f CMakeLists.txt && -d runner ]] || die "run from the rotq repository root (cwd: $PWD)"
compgen -G "$DEBS/*.deb" >/dev/null || die "no $DEBS/*.deb (run scripts/device_fetch_debs.sh on the Debian machine and carry .device)"

# ---------------------------------------------------------------------------------------------
stage "0/6 preflight"
[[ $(uname -m) == x86_64 ]] || die "the carried .debs are amd64; this machine is $(uname -m)"
( . /etc/os-release 2>/dev/null && echo "os: ${PRETTY_NAME:-unknown}" ) || true
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
echo "glibc: $glibc; carried binaries need: $(tr '\n' ' ' < "$DEBS/REQUIRES" 2>/dev/null || echo '?')"
version_ge() { [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1) == "$2" ]]; }   # $1 >= $2
if [[ -f $DEBS/REQUIRES ]]; then
  need=$(awk '$1 == "GLIBC" {print $2}' "$DEBS/REQUIRES")
  [[ -z $need ]] || version_ge "$glibc" "$need" || die "glibc $glibc is older than $need, which the Debian 12 libraries need (libevent: arc4random@GLIBC_2.36)"
  need=$(awk '$1 == "GLIBCXX" {print $2}' "$DEBS/REQUIRES")
  libstdcxx=$(ldconfig -p 2>/dev/null | awk '$1 == "libstdc++.so.6" && /x86-64/ {p = $NF} END {print p}' || true)
  if [[ -n $need && -n $libstdcxx ]]; then
    grep -qa "GLIBCXX_$need" "$(readlink -f "$libstdcxx")" || die "$libstdcxx lacks GLIBCXX_$need (needed by libspdlog/libfmt)"
  fi
fi

# ---------------------------------------------------------------------------------------------
stage "1/6 unpack $(ls "$DEBS"/*.deb | wc -l) .debs into $S"
unpack() {  # deb dest
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$2"
  else  # no dpkg: a .deb is an ar archive holding data.tar.{xz,zst,gz}
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && ar x "$OLDPWD/$1")
    tar -xf "$tmp"/data.tar.* -C "$2"
    rm -rf "$tmp"
  fi
}
fallback_pkgs=" $(tr "\n" " " < "$DEBS/FALLBACK" 2>/dev/null || true) "
rm -rf "$S"
mkdir -p "$S/fallback" "$S/fallback-lib"
for deb in "$DEBS"/*.deb; do
  pkg=$(basename "$deb"); pkg=${pkg%%_*}
  if [[ $fallback_pkgs == *" $pkg "* ]]; then
    mkdir -p "$S/fallback/$pkg"; unpack "$deb" "$S/fallback/$pkg"
  else
    unpack "$deb" "$S"
  fi
done
[[ -f $L/libmpi.so.40 && -f $L/libspdlog.so.1.10 && -d $L/openmpi/lib/openmpi3 ]] || die "unpacked tree incomplete"

# ---------------------------------------------------------------------------------------------
stage "2/6 fix up the Debian layout for a relocated prefix"
# Links that Debian creates with update-alternatives in postinst (not in the .debs).
for t in mpirun mpiexec mpicc mpicxx mpic++; do ln -sfn "$t.openmpi" "$S/usr/bin/$t"; done
ln -sfn libmpi.so.40 "$L/libmpi.so"
mkdir -p "$S/usr/include/$ARCH_TRIPLET"
ln -sfn "../../lib/$ARCH_TRIPLET/openmpi/include" "$S/usr/include/$ARCH_TRIPLET/mpi"

# Absolute symlinks (none are expected) would point into the host's /.
while IFS= read -r link; do
  tgt=$(readlink "$link")
  case "$tgt" in
    /etc/alternatives/*) rm -f "$link"; echo "  dropped alternatives link ${link#$S}" ;;
    /*) ln -sfn "$S$tgt" "$link"; echo "  relinked ${link#$S} -> $S$tgt" ;;
  esac
done < <(find "$S" -type l -lname '/*')

# CMake package files: Debian's spdlog/fmt/GTest/CLI11/nlohmann_json configs compute
# _IMPORT_PREFIX / PACKAGE_PREFIX_DIR from their own location (the only literal /usr paths are in
# the "/usr move" REALPATH guards, which never match under $S). Any literal /usr path in a target
# property would still point at the host: rewrite those into the sysroot.
mapfile -t cmake_files < <(find "$S/usr" -path '*/cmake/*' -name '*.cmake')
for f in "${cmake_files[@]}"; do
  sed -i -E "/(IMPORTED_LOCATION|IMPORTED_SONAME|INTERFACE_[A-Z_]+|set_and_check)/ s#([\" ;])/usr/(include|lib|share)#\\1$S/usr/\\2#g" "$f"
done
left=$(grep -nE '"/usr/(include|lib|share)' "${cmake_files[@]}" | grep -vE '_realOrig|PACKAGE_PREFIX_DIR "/usr"|_IMPORT_PREFIX "/usr' || true)
[[ -z $left ]] || { echo "$left"; die "absolute /usr paths left in CMake package files"; }
# pkg-config files (not used by the build; for completeness).
find "$S/usr" -name '*.pc' -exec sed -i "s#^prefix=/usr\$#prefix=$S/usr#" {} +

# Open MPI's site config (read via OPAL_SYSCONFDIR): Debian's file already switches off
# ucx/openib/ofi; also switch off the PSM/PSM2 MTLs, whose libraries (Intel True Scale /
# Omni-Path) are not carried.
conf=$S/etc/openmpi/openmpi-mca-params.conf
[[ -f $conf ]] || die "missing $conf"
if grep -qE '^mtl *=' "$conf"; then sed -i -E 's/^mtl *=.*/mtl = ^ofi,psm,psm2/' "$conf"; else echo 'mtl = ^ofi,psm,psm2' >> "$conf"; fi
# PMIx's own config hard-codes its plugin dir.
pconf=$L/pmix2/share/pmix-mca-params.conf
[[ -f $pconf ]] && sed -i "s#/usr/lib/$ARCH_TRIPLET/pmix2#$L/pmix2#g" "$pconf"

# Fallback libraries: only where the system lacks the soname (never shadow a newer system copy).
have_system_lib() {
  local p
  for p in $(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n {print $NF}'); do
    [[ -f $(readlink -f "$p") ]] && return 0
  done
  for p in /usr/lib/$ARCH_TRIPLET /lib/$ARCH_TRIPLET /usr/lib64 /lib64; do
    [[ -f $p/$1 ]] && return 0
  done
  return 1
}
while IFS= read -r so; do
  name=$(basename "$so")
  if have_system_lib "$name"; then
    echo "  fallback $name: system has it, not used"
  else
    ln -sfn "$so" "$S/fallback-lib/$name"; echo "  fallback $name: system lacks it, using the carried copy"
  fi
done < <(find "$S/fallback" -name 'lib*.so.[0-9]*' \( -type l -o -type f \) | grep -E '\.so\.[0-9]+$' | sort)

# Headers that must win over copies in torch/include: PyTorch wheels ship their own fmt (v11/12)
# headers, but Debian's libspdlog.so.1.10 was built against fmt 9 (SPDLOG_FMT_EXTERNAL) and links
# libfmt.so.9; recent wheels' public headers may also include <nlohmann/json.hpp> without shipping
# it. Imported targets' include dirs are -isystem (torch's come first); -I dirs are searched
# before every -isystem dir, and this shim dir is not -isystem anywhere, so -I keeps its rank.
mkdir -p "$S/shim-include"
ln -sfn "$S/usr/include/fmt" "$S/shim-include/fmt"
ln -sfn "$S/usr/include/nlohmann" "$S/shim-include/nlohmann"

# ---------------------------------------------------------------------------------------------
stage "3/6 write $S/env.sh"
cat > "$S/env.sh" <<EOF
# rotq device environment: Debian 12 Open MPI / spdlog / fmt relocated into $S.
# source $S/env.sh   (safe under set -u)
export ROTQ_SYSROOT=$S
export OPAL_PREFIX=$S/usr                       # Open MPI: \${prefix}-relative dirs (libdir, MCA plugins, help files, bindir)
export OPAL_SYSCONFDIR=$S/etc/openmpi           # Debian configured --sysconfdir=/etc/openmpi (absolute)
export PMIX_DESTDIR=$S                          # external PMIx: absolute dirs, prefixed by PMIX_DESTDIR
export HWLOC_PLUGINS_PATH=$L/hwloc              # absent on purpose: never load a foreign hwloc's plugins
export PATH=$S/usr/bin:$CUDA_HOME/bin\${PATH:+:\$PATH}
export LD_LIBRARY_PATH=$L:$L/openmpi/lib:$S/fallback-lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=\${OMPI_MCA_btl_vader_single_copy_mechanism:-none}  # CMA needs ptrace rights containers lack
# Without ssh/rsh, Open MPI 4.1 aborts even on one node, in mpirun and in a singleton's MPI_Init
# (which forks an orted): "plm_rsh_agent: ssh : rsh could not be found". An empty agent avoids it.
_rotq_agent=\$(command -v ssh 2>/dev/null || command -v rsh 2>/dev/null || true)
if ! { [ -f "\$_rotq_agent" ] && [ -x "\$_rotq_agent" ]; }; then export OMPI_MCA_plm_rsh_agent=; fi
unset _rotq_agent
EOF
# shellcheck disable=SC1091
source "$S/env.sh"
cat "$S/env.sh"

# ---------------------------------------------------------------------------------------------
stage "4/6 relocated Open MPI smoke test"
unresolved=$(for f in "$L"/libmpi.so.40 "$L"/libspdlog.so.1.10 "$S"/usr/bin/orterun "$S"/usr/bin/orted \
                      "$L"/pmix2/lib/libpmix.so.2 "$L"/openmpi/lib/openmpi3/*.so "$L"/pmix2/lib/pmix/*.so; do
               { ldd "$f" 2>/dev/null || true; } | { grep 'not found' || true; } | sed "s#^[[:space:]]*#  ${f#"$S"}: #"
             done | sort -u)
if [[ -n $unresolved ]]; then
  echo "unresolved shared libraries (Open MPI skips a component whose libraries are absent; this"
  echo "matters only for core libraries or a component the run needs):"
  echo "$unresolved"
fi
if ldd "$L/libmpi.so.40" "$L/libspdlog.so.1.10" "$S/usr/bin/orterun" | grep 'not found'; then
  die "libmpi/libspdlog/orterun have unresolved dependencies"
fi
ompi_info --path prefix --path libdir --path pkglibdir --path sysconfdir 2>/dev/null
if [[ ${ROTQ_SKIP_MPI_SMOKE:-0} != 1 ]]; then
  cc=$(command -v cc || command -v gcc) || die "no C compiler"
  smoke=$(mktemp -d)
  cat > "$smoke/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
  int rank, size; double x, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);
  x = rank + 1; MPI_Allreduce(&x, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  printf("mpi smoke: rank %d/%d allreduce %g\n", rank, size, sum);
  MPI_Finalize();
  return sum == size * (size + 1) / 2.0 ? 0 : 1;
}
EOF
  "$cc" "$smoke/hello.c" -o "$smoke/hello" -I"$L/openmpi/include" -L"$L/openmpi/lib" -lmpi
  timeout 60 "$smoke/hello"
  timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 "$smoke/hello"
  rm -rf "$smoke"
fi
[[ $mode == prepare ]] && { stage "done (--prepare-only)"; exit 0; }

# ---------------------------------------------------------------------------------------------
stage "5/6 configure $BUILD_DIR"
command -v cmake >/dev/null || die "cmake not found"
command -v ninja >/dev/null || die "ninja not found"
[[ -x $CUDA_HOME/bin/nvcc ]] || die "no $CUDA_HOME/bin/nvcc"
TORCH_PREFIX=$("$PYTHON" -c 'import torch;print(torch.utils.cmake_prefix_path)') || die "$PYTHON cannot import torch"
"$PYTHON" - <<'EOF' || die "torch was built with the pre-C++11 std::string ABI: Debian's libspdlog/libfmt cannot link with it"
import torch
print(f"torch {torch.__version__} cuda {torch.version.cuda} cxx11_abi {torch.compiled_with_cxx11_abi()} "
      f"gpus {torch.cuda.device_count() if torch.cuda.is_available() else 0}")
raise SystemExit(0 if torch.compiled_with_cxx11_abi() else 1)
EOF
cmake --version | head -1; ninja --version; c++ --version | head -1; "$CUDA_HOME/bin/nvcc" --version | tail -1
torch_inc=$(cd "$TORCH_PREFIX/../.." && pwd)/include
for h in base.h core.h; do
  if [[ -f $torch_inc/fmt/$h ]] && grep -q '#define FMT_VERSION' "$torch_inc/fmt/$h"; then
    echo "torch ships fmt $(grep -h '#define FMT_VERSION' "$torch_inc/fmt/$h" | awk '{print $3}') in $torch_inc/fmt (Debian spdlog needs fmt 9: shim $( ((FMT_SHIM)) && echo on || echo OFF))"
    break
  fi
done
[[ -f $torch_inc/nlohmann/json.hpp ]] && echo "torch ships nlohmann/json.hpp"

# FindMPI: MPI_C_LIB_NAMES + MPI_C_COMPILER_INCLUDE_DIRS (with MPI_mpi_LIBRARY) make it skip all
# detection, so neither a stray mpicc on PATH nor an mpi-c.pc (pkg-config) can override the
# sysroot (without the include-dirs variable a foreign mpi-c.pc wins: tested). HEADER_DIR /
# ADDITIONAL_INCLUDE_DIRS / SKIP_* are belt and braces ("not used" warnings are expected).
MPI_INC=$L/openmpi/include
cxx_flags=""
((FMT_SHIM)) && cxx_flags="-I$S/shim-include"
export TORCH_CUDA_ARCH_LIST="${CUDA_ARCH:0:${#CUDA_ARCH}-1}.${CUDA_ARCH: -1}"
# pkg-config (PCRE2, utf8proc): the Debian .pc files say prefix=/usr; the sysroot prefix moves
# their -I/-L into $S.
export PKG_CONFIG_PATH=$L/pkgconfig:$S/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$S
cmake -G Ninja -S . -B "$BUILD_DIR" \
  -DCMAKE_BUILD_TYPE=Release \
  -DROTQ_WITH_CUDA=ON \
  "-DCMAKE_PREFIX_PATH=$TORCH_PREFIX;$S/usr;$L/cmake" \
  "-DCMAKE_CXX_FLAGS=$cxx_flags" \
  -DCUDAToolkit_ROOT="$CUDA_HOME" \
  -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DTORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" \
  -DMPI_ASSUME_NO_BUILTIN_MPI=ON \
  -DMPI_SKIP_COMPILER_WRAPPER=ON \
  -DMPI_SKIP_GUESSING=ON \
  -DMPI_C_HEADER_DIR="$MPI_INC" \
  -DMPI_C_ADDITIONAL_INCLUDE_DIRS="$MPI_INC" \
  -DMPI_C_COMPILER_INCLUDE_DIRS="$MPI_INC" \
  -DMPI_C_LIB_NAMES=mpi \
  -DMPI_mpi_LIBRARY="$L/openmpi/lib/libmpi.so" \
  -DMPIEXEC_EXECUTABLE="$S/usr/bin/mpirun" \
  -DROTQ_MPIRUN="$S/usr/bin/mpirun" \
  -DHDF5_C_INCLUDE_DIR="$S/usr/include/hdf5/serial" \
  -DHDF5_C_LIBRARY_hdf5="$L/hdf5/serial/libhdf5.so" \
  "${extra_cmake[@]}"

grep -E '^(MPI_C_LIB_NAMES|MPI_mpi_LIBRARY|MPI_C_HEADER_DIR|spdlog_DIR|fmt_DIR|GTest_DIR|CLI11_DIR|nlohmann_json_DIR|Torch_DIR|ROTQ_MPIRUN|NCCL_LIBRARY|CUDAToolkit_[A-Z_]*DIR)[:=]' \
  "$BUILD_DIR/CMakeCache.txt" || true
if grep -E '^(spdlog|fmt|GTest|CLI11|nlohmann_json)_DIR:' "$BUILD_DIR/CMakeCache.txt" | grep -v "$S/" ; then
  die "a dependency was found outside $S (see above)"
fi
[[ $mode == configure ]] && { stage "done (--configure-only)"; exit 0; }

# ---------------------------------------------------------------------------------------------
stage "6/6 build ($JOBS jobs)"
# ROTQ_BUILD_TARGETS (e.g. "rotq rotq_mpi_tests") limits the build; -k 0 reports every failing
# file in one pass (device time is scarce).
read -r -a targets <<< "${ROTQ_BUILD_TARGETS:-}"
cmake --build "$BUILD_DIR" -j"$JOBS" ${targets[@]:+--target "${targets[@]}"} -- -k 0
ls -l "$BUILD_DIR"/rotq "$BUILD_DIR"/tests/rotq_*tests 2>/dev/null || true
ldd "$BUILD_DIR/rotq" | grep -E 'not found|mpi|spdlog|fmt|nccl|cudart|torch' || true
stage "done: source $S/env.sh && ctest --test-dir $BUILD_DIR --output-on-failure"
