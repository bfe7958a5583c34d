#!/usr/bin/env bash
# Prints the path of a llama-server binary for the real-engine test tier
# (tests/e2e/llama-server.test.mjs), building it once into a cache when needed.
#
#   scripts/llama-server.sh            the path; builds into the cache when missing
#   scripts/llama-server.sh --cached   the path only if there is one already; exit 1 otherwise
#   scripts/llama-server.sh --where    the cache path this version builds to (built or not)
#
# Where the binary comes from, first that applies:
#   1. $YARD_LLAMA_SERVER, an existing executable (it must exist; no fallback when it does not)
#   2. $XDG_CACHE_HOME/yard/llama-server-<version>/llama-server (default ~/.cache/yard/...)
#   3. built there: llama.cpp's source from the pinned npm package node-llama-cpp (its git
#      bundle llama/gitRelease.bundle, at the commit pinned below), CMake, CPU only, the
#      llama-server target alone. About 10-15 minutes on 2 cores; run under nice.
#
# The build runs in a temporary directory beside the cache and is renamed into place
# only when it is complete, so an interrupted build leaves nothing half-made. A lock
# (flock) makes a second caller wait for the first build instead of building again.
# Progress goes to stderr; stdout carries only the path. docs/testing.md.
set -euo pipefail

# The pins: the npm package, and what its bundle must hold. A new version changes all
# three together (and so the cache directory's name).
NODE_LLAMA_CPP_VERSION=3.22.1
LLAMA_CPP_TAG=v0.5.0
LLAMA_CPP_COMMIT=de3ff815ea7d559ee917f063901b8986f038abc6

version="$LLAMA_CPP_TAG-${LLAMA_CPP_COMMIT:0:7}"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/yard"
dest="$cache_root/llama-server-$version"
jobs="${JOBS:-2}"

die() {
    echo "llama-server.sh: $*" >&2
    exit 1
}

mode=build
case "${1:-}" in
"") ;;
--cached) mode=cached ;;
--where)
    echo "$dest/llama-server"
    exit 0
    ;;
*) die "unknown argument '$1'; use no argument, --cached or --where" ;;
esac

if [[ -n "${YARD_LLAMA_SERVER:-}" ]]; then
    [[ -x "$YARD_LLAMA_SERVER" && -f "$YARD_LLAMA_SERVER" ]] ||
        die "YARD_LLAMA_SERVER=$YARD_LLAMA_SERVER is not an executable file; point it at a llama-server binary or unset it to use the cache"
    echo "$YARD_LLAMA_SERVER"
    exit 0
fi

if [[ -x "$dest/llama-server" ]]; then
    echo "$dest/llama-server"
    exit 0
fi
if [[ $mode == cached ]]; then
    echo "llama-server.sh: no llama-server at $dest/llama-server; run scripts/llama-server.sh to build it (10-15 minutes) or set YARD_LLAMA_SERVER" >&2
    exit 1
fi

for tool in npm git cmake tar flock c++; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH; the llama-server build needs it (scripts/deps.sh test installs the build tools)"
done

mkdir -p "$cache_root" || die "cannot create the cache directory $cache_root"
exec 9>"$cache_root/llama-server-$version.lock"
if ! flock -n 9; then
    echo "llama-server.sh: another llama-server build is running; waiting for it" >&2
    flock 9
fi
# The build we waited for may have finished it.
if [[ -x "$dest/llama-server" ]]; then
    echo "$dest/llama-server"
    exit 0
fi

work="$(mktemp -d "$cache_root/.llama-server-$version.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$cache_root/llama-server-$version.build.log"
: >"$log"

step() { # step WHAT CMD...: runs CMD with its output in the log; says what failed
    local what=$1
    shift
    echo "llama-server.sh: $what" >&2
    if ! "$@" >>"$log" 2>&1; then
        tail -n 25 "$log" >&2
        die "$what failed; the full log is $log"
    fi
}

started=$SECONDS
echo "llama-server.sh: building llama-server $version into $dest (log: $log)" >&2
step "fetching node-llama-cpp@$NODE_LLAMA_CPP_VERSION from the npm registry" \
    npm pack "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" --pack-destination "$work" --silent
step "extracting llama.cpp's git bundle" \
    tar -xzf "$work/node-llama-cpp-$NODE_LLAMA_CPP_VERSION.tgz" -C "$work" \
    package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
info_tag="$(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' "$work/package/llama/llama.cpp.info.json")"
[[ "$info_tag" == "$LLAMA_CPP_TAG" ]] ||
    die "node-llama-cpp@$NODE_LLAMA_CPP_VERSION names llama.cpp tag '$info_tag', not the pinned $LLAMA_CPP_TAG; update the pins in scripts/llama-server.sh together"
# The bundle holds the tag's commit as HEAD (the tag itself may not be in it).
step "cloning llama.cpp from the bundle" \
    git clone --quiet --no-checkout "$work/package/llama/gitRelease.bundle" "$work/src"
got="$(git -C "$work/src" rev-parse --verify --quiet "refs/tags/$LLAMA_CPP_TAG^{commit}" ||
    git -C "$work/src" rev-parse HEAD)"
[[ "$got" == "$LLAMA_CPP_COMMIT" ]] ||
    die "llama.cpp's bundle holds commit $got for $LLAMA_CPP_TAG, not the pinned $LLAMA_CPP_COMMIT; update the pins in scripts/llama-server.sh together"
step "checking out $LLAMA_CPP_COMMIT" git -C "$work/src" -c advice.detachedHead=false checkout --quiet "$LLAMA_CPP_COMMIT"
rm -rf "$work/package" "$work"/*.tgz

# CPU only, no network code (no curl, no OpenSSL, no web UI fetched at build time), no
# host-specific instructions (the cache may be shared by machines of different CPUs),
# static libraries so the binary stands alone.
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
step "configuring (CMake, CPU only)" \
    cmake -S "$work/src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF "${launcher[@]}"
step "compiling the llama-server target (-j$jobs; 10-15 minutes on 2 cores)" \
    cmake --build "$work/build" --target llama-server -j"$jobs"
bin="$work/build/bin/llama-server"
[[ -x "$bin" ]] || die "the build finished without $bin; the full log is $log"
step "checking the binary runs (llama-server --version)" "$bin" --version

mkdir -p "$work/out"
cp "$bin" "$work/out/llama-server"
cat >"$work/out/BUILD-INFO" <<EOF
llama-server built by scripts/llama-server.sh
node-llama-cpp $NODE_LLAMA_CPP_VERSION, llama.cpp $LLAMA_CPP_TAG ($LLAMA_CPP_COMMIT)
cmake -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF, target llama-server
built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $((SECONDS - started)) s
EOF
# A directory without the binary is what some other tool left; the rename needs it gone.
if [[ -e "$dest" ]]; then rm -rf "$dest" || die "cannot remove $dest (it has no llama-server)"; fi
# The rename is the install: the directory appears complete or not at all.
mv -T "$work/out" "$dest" 2>/dev/null || die "cannot move the build into $dest"
echo "llama-server.sh: built $dest/llama-server in $((SECONDS - started)) s" >&2
echo "$dest/llama-server"
