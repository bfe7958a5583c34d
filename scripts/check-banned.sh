#!/usr/bin/env bash
# Reports calls to banned C functions in src/ tools/ tests/ (as curl's checksrc).
#
# Banned: sprintf vsprintf strcpy strcat atoi gets strtok. Use snprintf,
# vsnprintf, a bounded buffer from base/buf.h, strtol/strtoul with error
# checks, strtok_r. Comments and string literals are ignored.
# Prints FILE:LINE: banned call 'NAME' for each hit; exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=()
for d in src tools tests; do
    [[ -d $d ]] && dirs+=("$d")
done
[[ ${#dirs[@]} -eq 0 ]] && exit 0

mapfile -d '' files < <(find "${dirs[@]}" -name node_modules -prune -o \
    -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
[[ ${#files[@]} -eq 0 ]] && exit 0

# perl: strip comments and string/char literals (keeping line numbers), then
# look for NAME( as a whole word.
perl -e '
    my $banned = qr/\b(sprintf|vsprintf|strcpy|strcat|atoi|gets|strtok)\s*\(/;
    my $hits = 0;
    for my $file (@ARGV) {
        open(my $fh, "<", $file) or die "cannot read $file: $!\n";
        my $in_comment = 0;
        while (my $line = <$fh>) {
            my $code = "";
            my $i = 0;
            my $n = length $line;
            while ($i < $n) {
                if ($in_comment) {
                    my $end = index($line, "*/", $i);
                    if ($end < 0) { $i = $n; last; }
                    $i = $end + 2;
                    $in_comment = 0;
                    $code .= " ";
                    next;
                }
                my $c = substr($line, $i, 1);
                my $two = substr($line, $i, 2);
                if ($two eq "/*") { $in_comment = 1; $i += 2; next; }
                if ($two eq "//") { last; }
                if ($c eq "\"" || $c eq "\x27") {
                    my $q = $c;
                    $i++;
                    while ($i < $n) {
                        my $d = substr($line, $i, 1);
                        if ($d eq "\\") { $i += 2; next; }
                        $i++;
                        last if $d eq $q;
                    }
                    $code .= " ";
                    next;
                }
                $code .= $c;
                $i++;
            }
            while ($code =~ /$banned/g) {
                print "$file:$.: banned call \x27$1\x27\n";
                $hits++;
            }
        }
        close $fh;
    }
    if ($hits) {
        print STDERR "check-banned: $hits banned call(s); use snprintf, vsnprintf, base/buf.h, strtol/strtoul, strtok_r\n";
        exit 1;
    }
' "${files[@]}"
