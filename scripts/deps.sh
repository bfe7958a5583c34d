#!/usr/bin/env bash
# Checks that the Debian packages a make target needs are installed.
#
#   scripts/deps.sh build|deb|test|bench
#
# Groups are cumulative: deb (make deb) includes build, test includes deb,
# bench includes test.
# As root, missing packages are installed (quietly, only when something is
# missing). Otherwise prints one line saying what to install and exits 1.
set -euo pipefail

group="${1:-build}"

build_pkgs=(build-essential cmake pkg-config libuv1-dev libhttp-parser-dev libjansson-dev
    libyaml-dev libsqlite3-dev libcurl4-openssl-dev libarchive-dev libcmocka-dev libsystemd-dev)
# dpkg-buildpackage is in dpkg-dev; debian/control's Build-Depends are the build group.
deb_pkgs=(dpkg-dev debhelper)
# man-db, groff-base, systemd (systemd-analyze) and zsh: the package test renders
# the man pages, verifies the unit and loads the completions. bubblewrap: the
# sessions' sandbox (test_session). chromium: the dashboard's test (e2e/ui, driven by
# puppeteer-core). git: scripts/llama-server.sh clones llama.cpp from its bundle.
test_pkgs=(git clang clang-format libclang-rt-14-dev valgrind nodejs npm curl procps iproute2
    openssh-server openssh-client prometheus python3-uvicorn python3-fastapi
    sqlite3 slurm-wlm munge man-db groff-base systemd zsh bubblewrap chromium)
bench_pkgs=(wrk nginx)

case "$group" in
build) want=("${build_pkgs[@]}") ;;
deb) want=("${build_pkgs[@]}" "${deb_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${deb_pkgs[@]}" "${test_pkgs[@]}") ;;
bench) want=("${build_pkgs[@]}" "${deb_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
*)
    echo "deps.sh: unknown group '$group'; use build, deb, test or bench" >&2
    exit 2
    ;;
esac

is_installed() {
    local status
    status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" || return 1
    [[ "$status" == ii* ]]
}

missing=()
for pkg in "${want[@]}"; do
    case "$pkg" in
    # node and npm may come from outside dpkg (e.g. a node 20 in /usr/bin)
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    is_installed "$pkg" || missing+=("$pkg")
done

[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ "$(id -u)" -ne 0 ]]; then
    echo "missing packages; run: sudo apt-get install -y ${missing[*]}"
    exit 1
fi

# Services whose packages this run installs and tests never use: Debian enables
# them for the next boot. Tests start their own munged, slurmctld and slurmd (on
# their own sockets and ports); a machine that had these packages before keeps
# its services as they were.
down_units=()
for unit in munge slurmctld slurmd; do
    is_installed "$unit" || down_units+=("$unit.service")
done

echo "deps.sh: installing ${missing[*]}" >&2
log="$(mktemp /tmp/yard-deps.XXXXXX.log)"

# Keep package scripts from starting services (nginx, sshd) while installing;
# tests and benchmarks start their own instances on loopback.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    [[ $made_policy -eq 1 ]] && rm -f "$policy"
    return 0
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
if ! { apt-get "${apt_opts[@]}" update &&
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "deps.sh: installing ${missing[*]} failed; full log in $log" >&2
    exit 1
fi
rm -f "$log"

# Only where systemd runs (in a container without it nothing starts at boot).
if [[ ${#down_units[@]} -gt 0 && -d /run/systemd/system ]]; then
    systemctl disable --now --quiet "${down_units[@]}" >/dev/null 2>&1 || true
fi
