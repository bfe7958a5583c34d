#!/usr/bin/env bash
# The Debian package, as make test checks it (docs/install.md, docs/testing.md):
#
#   tests/package/check-deb.sh
#
# 1. Every library CMakeLists.txt finds with pkg-config comes from a package
#    that debian/control's Build-Depends lists (a clean build machine has only
#    those).
# 2. make deb builds it (dpkg-buildpackage, scripts/build-deb.sh).
# 3. dpkg -c lists the files 'make install PREFIX=/usr' installs: the same
#    paths, except that Debian 12 keeps units in /lib/systemd/system (the same
#    directory on a merged /usr) and compresses man pages, and the package adds
#    its /usr/share/doc/switchyard.
# 4. From the extracted package: yard version and mock-engine --help run, the
#    maintainer scripts parse, and systemd-analyze verify accepts the unit
#    with its man pages found (skipped, with a line, without systemd-analyze).
#    verify needs the unit's programs where it names them, so it checks a copy
#    whose ExecStart names the extracted yard; the unit's own ExecStart is
#    compared as text.
# Prints one line per failure and exits 1 when there is any.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail=0
bad() {
    echo "check-deb: $*" >&2
    fail=1
}
scratch=$(mktemp -d /tmp/yard-check-deb.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# 1. Build-Depends against pkg-config modules.
build_deps=$(sed -n '/^Build-Depends:/,/^[A-Z]/p' debian/control | sed '$d')
modules=$(tr '\n' ' ' <CMakeLists.txt | grep -o 'pkg_check_modules([^)]*)' |
    sed 's/pkg_check_modules(//; s/)//' |
    awk '{ for (i = 2; i <= NF; i++) if ($i !~ /^(REQUIRED|QUIET|IMPORTED_TARGET|GLOBAL|NO_CMAKE_PATH|NO_CMAKE_ENVIRONMENT_PATH)$/) print $i }' |
    sed 's/[<>=].*//')
for m in $modules; do
    pc=$(pkg-config --variable=pcfiledir "$m" 2>/dev/null)/$m.pc || true
    pkg=$(dpkg -S "$pc" 2>/dev/null | head -n 1 | cut -d: -f1) || true
    if [[ -z $pkg ]]; then
        bad "no installed package has pkg-config module '$m' (CMakeLists.txt)"
    elif ! grep -Eq "(^|[ ,])$pkg([ ,(]|$)" <<<"$build_deps"; then
        bad "CMakeLists.txt uses pkg-config module '$m' from $pkg, which Build-Depends in debian/control does not list"
    fi
done

# 2. Build.
deb=$(scripts/build-deb.sh | tail -n 1) || exit 1
[[ -f $deb ]] || { bad "scripts/build-deb.sh printed '$deb', which is no file"; exit 1; }

# 3. The package's files against make install's.
make --no-print-directory install PREFIX=/usr DESTDIR="$scratch/install" >/dev/null
(cd "$scratch/install" && find . -type f | sed 's|^\.||' |
    sed 's|^/usr/lib/systemd/system/|/lib/systemd/system/|; s|^\(/usr/share/man/.*\)$|\1.gz|' |
    sort) >"$scratch/install.list"
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $NF }' | sed 's|^\.||' |
    grep -v '^/usr/share/doc/switchyard/' | sort >"$scratch/deb.list"
if ! diff -u "$scratch/install.list" "$scratch/deb.list" >"$scratch/diff"; then
    bad "the package's files differ from make install's (- make install, + package):"
    cat "$scratch/diff" >&2
fi

# 4. What the package holds.
root=$scratch/root
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$scratch/control"
# libcurl, libarchive and libsystemd are loaded with dlopen (src/cloud/curl_dl.c,
# src/session/archive_dl.c, src/base/notify.c), so no NEEDED entry makes shlibs name them.
for lib in libcurl4 libarchive13 libsystemd0; do
    dpkg-deb -f "$deb" Depends | grep -Eq "(^|[ ,])$lib([ ,(]|\$)" ||
        bad "the package does not depend on $lib, which yard loads at run time (debian/control Depends)"
done
version=$(dpkg-deb -f "$deb" Version)
out=$("$root/usr/bin/yard" version 2>&1) || bad "yard version from the package failed: $out"
[[ ${out%%$'\n'*} == "yard ${version%-*}" ]] ||
    bad "yard version from the package printed '${out%%$'\n'*}', not 'yard ${version%-*}'"
"$root/usr/libexec/yard/mock-engine" --help >/dev/null || bad "mock-engine --help from the package failed"
for s in postinst postrm prerm; do
    [[ -f $scratch/control/$s ]] && { sh -n "$scratch/control/$s" || bad "$s does not parse"; }
done
unit=$root/lib/systemd/system/yard.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[[ $exec_start == "/usr/bin/yard serve -c /etc/yard/yard.yaml --state-dir /var/lib/yard" ]] ||
    bad "the unit's ExecStart is '$exec_start'"
if command -v systemd-analyze >/dev/null; then
    sed "s|^ExecStart=/usr/bin/yard |ExecStart=$root/usr/bin/yard |" "$unit" >"$scratch/yard.service"
    if ! err=$(MANPATH="$root/usr/share/man:" systemd-analyze verify "$scratch/yard.service" 2>&1) ||
        [[ -n $err ]]; then
        bad "systemd-analyze verify does not accept the unit: $err"
    fi
else
    echo "check-deb: systemd-analyze is not installed (Debian: systemd); the unit is not verified"
fi

[[ $fail -eq 0 ]] && echo "check-deb: $deb: ok"
exit "$fail"
