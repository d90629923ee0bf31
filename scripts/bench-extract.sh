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
# Warm up once (module loading), then whole passes until the time is up.
for my $d (@data) { my $r = Sisimai->make(\$d); }
my ($u0, $s0) = times;
my $t0 = time; my $passes = 0;
while ($passes == 0 || time - $t0 < $seconds) {
    for my $d (@data) { my $r = Sisimai->make(\$d); $found += scalar @{ $r // [] }; }
    $passes++;
}
my $secs = time - $t0; my ($u1, $s1) = times; my $cpu = ($u1 - $u0) + ($s1 - $s0); $cpu = $secs if $cpu <= 0;
my $n = $passes * scalar @data;
printf "sisimai %s: %d files (%.1f MB) x %d passes in %.2fs wall, %.2fs CPU: %.0f files/s, %.2f MB/s wall; %.0f files/s per CPU second (records %d)\n",
    Sisimai->version, scalar @data, $bytes / 1e6, $passes, $secs, $cpu, $n / $secs, $passes * $bytes / 1e6 / $secs, $n / $cpu, $found;
PERL
)"
echo "$theirs"

# The ratio uses files per CPU second: other processes share the machine, and wall time
# would charge their load to whichever side ran while it was high.
cpu_fps() { sed -E 's/.*; ([0-9.]+) files\/s per CPU second.*/\1/' <<<"$1"; }
wall_fps() { sed -E 's/.*CPU: ([0-9.]+) files\/s.*/\1/' <<<"$1"; }
awk -v a="$(cpu_fps "$ours")" -v b="$(cpu_fps "$theirs")" -v wa="$(wall_fps "$ours")" -v wb="$(wall_fps "$theirs")" 'BEGIN {
    r = a / b
    printf "ratio (per CPU second): delistd is %.1fx Sisimai (target >= 50x): %s\n", r, (r >= 50 ? "ok" : "BELOW TARGET")
    printf "ratio (wall clock, load-sensitive): %.1fx\n", wa / wb
}'
