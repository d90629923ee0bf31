#!/usr/bin/env bash
# How often delistd's status code agrees with Sisimai's `deliverystatus` on the sisimai
# corpus, over the files where both give one. Sisimai reports one record per recipient; a
# file agrees when our code equals any of its records' codes.
#
#   scripts/sisimai-agreement.sh [-v]      -v lists the files that disagree
set -euo pipefail
cd "$(dirname "$0")/.."
verbose="${1:-}"

corpus=""
for d in ../shared/corpus/sisimai ../../shared/corpus/sisimai; do
    if [ -d "$d" ]; then corpus="$(cd "$d" && pwd)"; break; fi
done
[ -n "$corpus" ] || { echo "sisimai corpus not found beside the crate" >&2; exit 1; }

if ! perl -MSisimai -e1 2>/dev/null; then
    apt-get install -y -o DPkg::Lock::Timeout=600 libsisimai-perl >/dev/null
fi

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
cargo bench --quiet --bench extract -- --codes --corpus "$corpus" 2>/dev/null >"$tmp/ours.tsv"

perl - "$corpus" >"$tmp/theirs.tsv" <<'PERL'
use strict; use warnings;
use File::Find;
use Sisimai;
my ($dir) = @ARGV;
my @files;
find({ wanted => sub { push @files, $File::Find::name if /\.eml$/ && -f $_ }, no_chdir => 1 }, $dir);
for my $f (sort @files) {
    local $/; open(my $fh, '<:raw', $f) or die "$f: $!"; my $s = <$fh>;
    my $r = eval { Sisimai->make(\$s) } // [];
    my %codes = map { ($_->deliverystatus // '') => 1 } @$r;
    delete $codes{''};
    print join("\t", $f, join(',', sort keys %codes)), "\n";
}
PERL

awk -F'\t' -v verbose="$verbose" '
    NR == FNR { ours[$1] = $2; next }
    {
        files++
        theirs = $2; mine = ours[$1]
        if (mine != "") we++
        if (theirs != "") they++
        if (mine == "" || theirs == "") next
        both++
        n = split(theirs, list, ",")
        hit = 0
        for (i = 1; i <= n; i++) if (list[i] == mine) hit = 1
        if (hit) agree++
        else if (verbose == "-v") printf "disagree: %s ours=%s sisimai=%s\n", $1, mine, theirs
    }
    END {
        printf "files: %d; with a code: delistd %d, sisimai %d, both %d\n", files, we, they, both
        printf "agreement where both have a code: %d / %d = %.1f%%\n", agree, both, (both ? 100 * agree / both : 0)
    }
' "$tmp/ours.tsv" "$tmp/theirs.tsv"
