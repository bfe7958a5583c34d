#!/usr/bin/env bash
# Builds the Debian package with Debian's tooling (make deb):
#
#   scripts/build-deb.sh    -> build-deb/switchyard_VERSION-REV_ARCH.deb (and -dbgsym)
#
# dpkg-buildpackage builds in the source tree and writes its results next to
# it, so it runs on a copy under build-deb/src/ (the files git knows, or the
# tree without build directories when this is no git checkout). Compilers go
# through ccache when it is installed; the copy's path stays the same from one
# build to the next, so unchanged files are not compiled again. The build's
# log is build-deb/build.log; its end is printed when the build fails.
# Prints the package's path as the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^project(switchyard VERSION \([0-9.]*\) .*/\1/p' CMakeLists.txt)
changelog=$(dpkg-parsechangelog -S Version)
if [[ -z $version ]]; then
    echo "build-deb: no 'project(switchyard VERSION X ...)' line in CMakeLists.txt" >&2
    exit 1
fi
if [[ ${changelog%-*} != "$version" ]]; then
    echo "build-deb: debian/changelog is at $changelog but CMakeLists.txt at $version;" \
        "add a changelog entry: dch -v $version-1" >&2
    exit 1
fi

out=build-deb
src=$out/src/switchyard-$version
rm -rf "$out/src"
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and new files that are not ignored, as they are in the tree now.
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -C "$src" -xf -
else
    tar --exclude=./build --exclude='./build-*' --exclude=node_modules -cf - . | tar -C "$src" -xf -
fi

path=$PATH
[[ -d /usr/lib/ccache ]] && path=/usr/lib/ccache:$PATH
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
log=$out/build.log
echo "build-deb: dpkg-buildpackage in $src (log: $log)"
if ! (cd "$src" && PATH=$path DEB_BUILD_OPTIONS="parallel=$jobs nocheck" \
    dpkg-buildpackage -b -us -uc) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build-deb: dpkg-buildpackage failed; the whole log is $log" >&2
    exit 1
fi

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=switchyard_${changelog}_${arch}.deb
rm -f "$out"/*.deb "$out"/*.buildinfo "$out"/*.changes
# The package, its debug symbols (switchyard-dbgsym) and dpkg-genchanges' records.
mv "$out/src"/*.deb "$out/src"/*.buildinfo "$out/src"/*.changes "$out/"
echo "$out/$deb"
