#!/usr/bin/env bash
# Checks the C sources in src/ tools/ tests/ against .clang-format.
#
#   scripts/check-format.sh         report files that need formatting; exit 1 if any
#   scripts/check-format.sh --fix   reformat them in place (make format)
set -euo pipefail
cd "$(dirname "$0")/.."

fix=0
case "${1:-}" in
--fix) fix=1 ;;
"") ;;
*)
    echo "usage: scripts/check-format.sh [--fix]" >&2
    exit 2
    ;;
esac

cf="${CLANG_FORMAT:-clang-format}"
if ! command -v "$cf" >/dev/null 2>&1; then
    echo "check-format: '$cf' not found; run: scripts/deps.sh test" >&2
    exit 1
fi

dirs=()
for d in src tools tests; do
    [[ -d $d ]] && dirs+=("$d")
done
[[ ${#dirs[@]} -eq 0 ]] && exit 0

mapfile -d '' files < <(find "${dirs[@]}" -name node_modules -prune -o \
    -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
[[ ${#files[@]} -eq 0 ]] && exit 0

if [[ $fix -eq 1 ]]; then
    for f in "${files[@]}"; do
        before="$(cksum <"$f")"
        "$cf" -i --style=file "$f"
        [[ "$(cksum <"$f")" == "$before" ]] || echo "formatted $f"
    done
    exit 0
fi

bad=0
for f in "${files[@]}"; do
    if ! "$cf" --dry-run --Werror --style=file "$f" >/dev/null 2>&1; then
        echo "$f: needs formatting"
        bad=$((bad + 1))
    fi
done
if [[ $bad -gt 0 ]]; then
    echo "check-format: $bad file(s) need formatting; run: make format" \
        "(clang-format --dry-run FILE shows the changes)" >&2
    exit 1
fi
