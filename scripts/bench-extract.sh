#!/usr/bin/env bash
# Extraction throughput: delistd (release build) against Sisimai 4.25 (Perl) on the same
# sisimai corpus, in the same run. Both read every file into memory first and are timed
# in-process over whole passes of the corpus, so only parsing is measured.
#
#   scripts/bench-extract.sh [SECONDS]      default 10 s per side
#
# Target: delistd >= 50x Sisimai's files/s.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"

corpus=""
for d in ../shared/corpus/sisimai ../../shared/corpus/sisimai; do
    if [ -d "$d" ]; then corpus="$(cd "$d" && pwd)"; break; fi
done
[ -n "$corpus" ] || { echo "sisimai corpus not found beside the crate" >&2; exit 1; }

if ! perl -MSisimai -e1 2>/dev/null; then
    echo "installing libsisimai-perl ..." >&2
    apt-get install -y -o DPkg::Lock::Timeout=600 libsisimai-perl >/dev/null
fi

ours="$(cargo bench --quiet --bench extract -- --seconds "$seconds" --corpus "$corpus" 2>/dev/null | tail -1)"
echo "$ours"

theirs="$(perl - "$corpus" "$seconds" <<'PERL'
use strict; use warnings;
use File::Find; use Time::HiRes qw(time);
use Sisimai;
my ($dir, $seconds) = @ARGV;
my @files;
find({ wanted => sub { push @files, $File::Find::name if /\.eml$/ && -f $_ }, no_chdir => 1 }, $dir);
@files = sort @files;
my @data = map { local $/; open(my $fh, '<:raw', $_) or die "$_: $!"; my $s = <$fh>; $s } @files;
my $bytes = 0; $bytes += length($_) for @data;
my $found = 0;
my $t0 = time; my $passes = 0;
while ($passes == 0 || time - $t0 < $seconds) {
    for my $d (@data) { my $r = Sisimai->make(\$d); $found += scalar @{ $r // [] }; }
    $passes++;
}
my $secs = time - $t0; my $n = $passes * scalar @data;
printf "sisimai %s: %d files (%.1f MB) x %d passes in %.2fs: %.0f files/s, %.2f MB/s (records %d)\n",
    Sisimai->version, scalar @data, $bytes / 1e6, $passes, $secs, $n / $secs, $passes * $bytes / 1e6 / $secs, $found;
PERL
)"
echo "$theirs"

ours_fps="$(sed -E 's/.*: ([0-9.]+) files\/s.*/\1/' <<<"$ours")"
theirs_fps="$(sed -E 's/.*: ([0-9.]+) files\/s.*/\1/' <<<"$theirs")"
awk -v a="$ours_fps" -v b="$theirs_fps" 'BEGIN { r = a / b; printf "ratio: delistd is %.1fx Sisimai (target >= 50x): %s\n", r, (r >= 50 ? "ok" : "BELOW TARGET") }'
