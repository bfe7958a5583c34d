#!/usr/bin/env bash
# Checks the include graph of src/ against the module layers (docs/architecture.md,
# "Modules and who may call whom", "Layers"), and prints the graph with --graph.
#
# A module (a directory of src/) includes only modules of a lower layer and its own:
#   0 base
#   1 config store gpu http catalog
#   2 engine cloud
#   3 runner
#   4 host session
#   5 sup
#   6 sched
#   7 router
#   8 admin
#   9 cli
#   10 src/main.c
# host/name.h (the reserved name of this machine, a header that includes nothing)
# may be included from any layer. Besides:
#   - a module's private header (X/internal.h, sup/sup_int.h) is included only by
#     that module's own files;
#   - runner/pod.h (the pod runner's own type) only by runner/ and host/, and no
#     cast to struct runner_pod outside them: no runner downcasts;
#   - admin/ never drives the supervisor (sup_start, sup_stop, sup_sleep, sup_wake
#     ...): every load and stop goes through the scheduler, one control path.
# Prints FILE: what is wrong for each breach; exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A layer=(
    [base]=0 [config]=1 [store]=1 [gpu]=1 [http]=1 [catalog]=1 [engine]=2 [cloud]=2 [runner]=3
    [host]=4 [session]=4 [sup]=5 [sched]=6 [router]=7 [admin]=8 [cli]=9 [.]=10
)

bad=0
breach() {
    echo "$1: $2"
    bad=1
}

declare -A edges=()
while IFS= read -r file; do
    rel=${file#src/}
    mod=$(dirname "$rel")
    if [[ -z ${layer[$mod]+x} ]]; then
        breach "$file" "module '$mod' has no layer; add it to scripts/check-layers.sh and docs/architecture.md"
        continue
    fi
    while IFS= read -r inc; do
        dep=${inc%%/*}
        [[ $dep == "$inc" ]] && continue # a system header or one without a module
        [[ -z ${layer[$dep]+x} ]] && continue
        if [[ $inc == */internal.h || $inc == sup/sup_int.h ]] && [[ $dep != "$mod" ]]; then
            breach "$file" "includes $inc, private to $dep/"
        fi
        if [[ $inc == runner/pod.h && $mod != runner && $mod != host ]]; then
            breach "$file" "includes runner/pod.h: reach a pod's runner through struct runner and host/"
        fi
        [[ $dep == "$mod" ]] && continue
        edges["$mod -> $dep"]=1
        [[ $inc == host/name.h ]] && continue
        if ((layer[$dep] > layer[$mod])); then
            breach "$file" "includes $inc: $mod (layer ${layer[$mod]}) may not include $dep (layer ${layer[$dep]})"
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$file")
done < <(find src -type f \( -name '*.c' -o -name '*.h' \) | sort)

while IFS=: read -r file line _; do
    case $file in src/runner/* | src/host/*) ;; *) breach "$file:$line" "casts to struct runner_pod: a runner downcast" ;; esac
done < <(grep -rn '(struct runner_pod \*)' src || true)

while IFS=: read -r file line _; do
    breach "$file:$line" "admin drives the supervisor directly; go through the scheduler (sched_*)"
done < <(grep -rnE '\bsup_(start|start_on|start_at|start_replica|stop|stop_replica|sleep|wake)\s*\(' src/admin || true)

if [[ ${1:-} == --graph ]]; then
    for e in "${!edges[@]}"; do echo "$e"; done | sort
fi
exit $bad
