#!/usr/bin/env bash
# Downloads (here, on the Debian 12 machine) the Debian .deb files that the GPU machine needs to
# build and run rotq: it has CUDA, NCCL and PyTorch but none of rotq's Debian libraries, and no
# package registry. scripts/device_build.sh unpacks them there with `dpkg -x` into a prefix.
#
# Usage: scripts/device_fetch_debs.sh            -> .device/debs/*.deb (repo-relative, git-ignored
#                                                    through .git/info/exclude)
# Not carried: libtorch, CUDA, NCCL (the GPU machine has them) and what every Ubuntu 24.04 base has
# (libc6, libstdc++6, libgcc-s1, zlib1g, libgomp1, libuuid1).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.device/debs

# Build: headers, CMake package files, link-time .so symlinks, static GoogleTest.
BUILD_PKGS=(
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev
  libopenmpi-dev               # mpi.h and openmpi/lib/libmpi.so (its own deps, -dev of hwloc etc., are only for static/wrapper use)
  libyaml-cpp-dev libhdf5-dev  # the experiment runner (not yet tried on the GPU machine)
  libpcre2-dev libutf8proc-dev # tokenizer.json's pre-tokenizer regexes and NFC (pkg-config)
)
# Run: what libspdlog/libfmt, libmpi.so.40, libopen-rte/-pal, libpmix.so.2, mpirun (orterun) and
# orted link (readelf -d), plus what the Open MPI MCA plugins opened in a single-node run link.
RUN_PKGS=(
  libspdlog1.10 libfmt9
  libopenmpi3 openmpi-bin openmpi-common
  libhwloc15                   # libmpi, libopen-rte, libopen-pal, libpmix
  libevent-core-2.1-7 libevent-pthreads-2.1-7   # libopen-pal, libopen-rte, orterun, libpmix
  libpmix2                     # mca_pmix_ext3x (+ its pmix_mca_* plugins)
  libmunge2                    # libpmix
  libyaml-cpp0.7
  libhdf5-103-1 libsz2 libaec0 # libhdf5_serial.so
  libpcre2-8-0 libutf8proc2     # the tokenizers (Debian's builds, the .so the -dev links point to)
)
# Fallbacks: device_build.sh puts these on LD_LIBRARY_PATH only where the system lacks the soname,
# so that they never shadow a newer system copy.
FALLBACK_PKGS=(
  libudev1                     # libhwloc.so.15
  libnl-3-200                  # mca_reachable_netlink.so
  libcurl4                     # libhdf5 (Ubuntu 24.04's libcurl4t64 has the same soname)
)
# Deliberately not carried: libhwloc-plugins (X11/OpenCL/ICU, ~40 MB; hwloc works without them),
# libpsm2-2/libpsm-infinipath1 (mtl psm/psm2 are switched off in the relocated mca-params.conf),
# libucx0/libfabric1/libibverbs1 (Debian's mca-params.conf already excludes ucx/ofi/openib).

if ! apt-cache show "${BUILD_PKGS[0]}" >/dev/null 2>&1; then
  echo "device_fetch_debs: apt lists missing, running apt-get update" >&2
  apt-get update -qq
fi

rm -rf "$DEST"
mkdir -p "$DEST"
chmod 777 "$DEST"   # lets apt's _apt user write there (else: "download is performed unsandboxed" warning)
(cd "$DEST" && apt-get download -q "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}" "${FALLBACK_PKGS[@]}")
printf '%s\n' "${FALLBACK_PKGS[@]}" > "$DEST/FALLBACK"

# Every package must have landed, exactly once.
for pkg in "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}" "${FALLBACK_PKGS[@]}"; do
  n=$(ls "$DEST"/"${pkg}"_*.deb 2>/dev/null | wc -l)
  if [[ $n -ne 1 ]]; then
    echo "device_fetch_debs: expected one ${pkg}_*.deb, found $n" >&2
    exit 1
  fi
done

# Highest symbol versions the carried ELF files need from the GPU machine's glibc / libstdc++
# (checked there by device_build.sh before anything else).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for deb in "$DEST"/*.deb; do dpkg-deb -x "$deb" "$tmp"; done
find "$tmp" -type f \( -name '*.so*' -o -path '*/bin/*' \) -print0 |
  { xargs -0 objdump -T 2>/dev/null || true; } | grep -oE '\((GLIBC|GLIBCXX|CXXABI)_[0-9.]+\)' | tr -d '()' | sort -u -V > "$tmp/versions"
: > "$DEST/REQUIRES"
for p in GLIBC GLIBCXX CXXABI; do
  v=$(grep "^${p}_" "$tmp/versions" | sort -V | tail -1 | sed "s/^${p}_//")
  [[ -n $v ]] && echo "$p $v" >> "$DEST/REQUIRES"
done
echo "device_fetch_debs: carried binaries need at least: $(tr '\n' ' ' < "$DEST/REQUIRES")"

excl=.git/info/exclude
if [[ -d .git ]]; then
  mkdir -p .git/info
  grep -qxF '/.device/' "$excl" 2>/dev/null || echo '/.device/' >> "$excl"
fi

ls -l "$DEST"
echo "device_fetch_debs: $(ls "$DEST"/*.deb | wc -l) packages, $(du -cb "$DEST"/*.deb | tail -1 | cut -f1) bytes ($(du -ch "$DEST"/*.deb | tail -1 | cut -f1)) in $DEST"
