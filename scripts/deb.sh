#!/usr/bin/env bash
# Builds the Debian package with cargo-deb, installs it on this machine with dpkg -i, checks
# the installed files as an operator would, and purges it again:
#
#   * the system user delistd and the group delistd-staff exist; /var/lib/delistd is theirs;
#   * `systemd-analyze verify` is silent on the installed unit, and the unit with the Maildir
#     drop-in (shipped as an example) still rates at most 1.5 (scripts/check-systemd-unit.sh);
#   * `delistd check-config --no-secrets` passes on the installed example config, as root and
#     as the service user (who must be able to write the database directory);
#   * the man page and the bash/zsh/fish completions are where those tools look;
#   * dpkg --purge removes the package; the case database is kept (debian/postrm).
#
# Needs root and cargo-deb (scripts/install-test-deps.sh installs it). Builds the release binary
# (DELISTD_DEB_PREBUILT=1: use target/release/delistd as it is). Exits 1 on any failure.
#   bash scripts/deb.sh            build, install, check, purge
#   bash scripts/deb.sh --build    only build target/debian/delistd_*.deb
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
    echo "deb: FAILED: $*" >&2
    exit 1
}

command -v cargo-deb >/dev/null || fail "cargo-deb not found: run scripts/install-test-deps.sh"

# scripts/test.sh has just built everything (--all-targets) and says so: building the binary
# alone would compile it again (dev-dependencies unify features differently).
if [[ -z ${DELISTD_DEB_PREBUILT:-} ]]; then
    cargo build --release --bin delistd
fi
[[ -x target/release/delistd ]] || fail "no target/release/delistd"
rm -rf target/assets target/debian
target/release/delistd generate-assets target/assets
cargo deb --no-build --strip >/dev/null
deb=$(ls target/debian/delistd_*.deb)
echo "deb: built $deb ($(du -h "$deb" | cut -f1))"
if [[ ${1:-} == --build ]]; then
    exit 0
fi

[[ $(id -u) -eq 0 ]] || fail "installing needs root"
if dpkg-query -W -f='${Status}' delistd 2>/dev/null | grep -q "install ok installed"; then
    fail "a delistd package is already installed here; this script installs and purges its own"
fi
had_state=0
[[ -e /var/lib/delistd ]] && had_state=1
dpkg -i "$deb" >/dev/null
trap 'dpkg --purge delistd >/dev/null 2>&1 || true' EXIT

# The user, the group, the state directory.
id delistd >/dev/null || fail "no user delistd"
getent group delistd-staff >/dev/null || fail "no group delistd-staff"
owner=$(stat -c '%U:%G %a' /var/lib/delistd)
[[ $owner == "delistd:delistd-staff 2770" ]] || fail "/var/lib/delistd is $owner, expected delistd:delistd-staff 2770"

# The files, where the tools look for them.
for f in /usr/bin/delistd /etc/delistd/delistd.toml /usr/lib/systemd/system/delistd.service \
    /usr/lib/sysusers.d/delistd.conf /usr/share/doc/delistd/examples/maildir.conf \
    /usr/share/bash-completion/completions/delistd /usr/share/zsh/vendor-completions/_delistd \
    /usr/share/fish/vendor_completions.d/delistd.fish /usr/share/delistd/templates/acknowledge.en.txt; do
    [[ -e $f ]] || fail "$f is not installed"
done
ls /usr/share/man/man1/delistd.1* >/dev/null 2>&1 || fail "no man page delistd(1)"
dpkg-query -W -f='${Conffiles}\n' delistd | grep -q /etc/delistd/delistd.toml || fail "delistd.toml is not a conffile"
bash -c '. /usr/share/bash-completion/completions/delistd && complete -p delistd' >/dev/null ||
    fail "the bash completion does not load"

# The unit as installed: verify is silent (ExecStart's binary is there now).
verify=$(systemd-analyze verify --man=no /usr/lib/systemd/system/delistd.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
[[ -z $verify ]] || fail "systemd-analyze verify: $verify"
echo "deb: systemd-analyze verify: clean"
# The unit with the Maildir drop-in folded in, against the same exposure limit.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; dpkg --purge delistd >/dev/null 2>&1 || true' EXIT
dropin=$(grep -v -e '^#' -e '^\[' -e '^$' /usr/share/doc/delistd/examples/maildir.conf)
grep -v '^PrivateUsers=' /usr/lib/systemd/system/delistd.service |
    awk -v dropin="$dropin" '/^\[Install\]/ { print dropin; print "" } { print }' >"$scratch/delistd.service"
DELISTD_BIN=/usr/bin/delistd bash scripts/check-systemd-unit.sh "$scratch/delistd.service" | grep -E '^(exposure|check-systemd-unit)' |
    sed 's/^/deb: with maildir.conf: /'

# The example config, as installed, before any credential exists.
delistd check-config --no-secrets --config /etc/delistd/delistd.toml >/dev/null ||
    fail "check-config --no-secrets on the installed config (as root)"
setpriv --reuid=delistd --regid=delistd-staff --clear-groups \
    delistd check-config --no-secrets --config /etc/delistd/delistd.toml >/dev/null ||
    fail "check-config --no-secrets on the installed config (as the service user delistd)"
echo "deb: check-config --no-secrets: ok (root and delistd)"
man_out=$(delistd --help)
[[ $man_out == *check-config* ]] || fail "delistd --help"

dpkg --purge delistd >/dev/null
[[ ! -e /usr/bin/delistd ]] || fail "/usr/bin/delistd left after purge"
[[ ! -e /etc/delistd/delistd.toml ]] || fail "the conffile was left after purge"
if ((had_state == 0)); then
    rm -rf /var/lib/delistd
fi
trap 'rm -rf "$scratch"' EXIT
echo "deb: OK (installed, checked, purged)"
