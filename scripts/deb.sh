#!/usr/bin/env bash
# Builds the Debian package with cargo-deb, installs it on this machine with dpkg -i, checks
# the installed files as an operator would, and purges it again:
#
#   * the system user delistd and the group delistd-staff exist; /var/lib/delistd is theirs;
#   * `systemd-analyze verify` is silent on the installed unit, and the unit with the Maildir
#     drop-in (shipped as an example) still rates at most 1.5 (scripts/check-systemd-unit.sh);
#   * `delistd check-config --no-secrets` passes on the installed example config, as root and
#     as the service user (who must be able to write the database directory);
#   * staff without root: a member of delistd-staff uses `delistd cases` on a database the
#     service user made (the history records their name), SQLite's -wal/-shm stay writable by
#     the group whoever made them, and a user outside the group is refused with exit 77;
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

# Staff without root: a database the service user made in /var/lib/delistd (as the unit runs
# it: user delistd, group delistd-staff, UMask=0007) is read and written by a member of
# delistd-staff with an ordinary umask, whose name the history records; SQLite's -wal and -shm
# are the group's to write whichever side made them; a user outside the group is refused with
# exit 77 and a message that names the group. Both users are made here and removed after.
staff_user=dlstaff$$
outsider=dlout$$
check_dir=/var/lib/delistd/deb-check.$$
web_pid=""
cleanup_staff() {
    if [[ -n $web_pid ]]; then
        kill "$web_pid" 2>/dev/null || true
        wait "$web_pid" 2>/dev/null || true
    fi
    web_pid=""
    rm -rf "$check_dir"
    userdel "$staff_user" >/dev/null 2>&1 || true
    userdel "$outsider" >/dev/null 2>&1 || true
    groupdel "$staff_user" >/dev/null 2>&1 || true
    groupdel "$outsider" >/dev/null 2>&1 || true
}
trap 'cleanup_staff; rm -rf "$scratch"; dpkg --purge delistd >/dev/null 2>&1 || true' EXIT
useradd --no-create-home --shell /bin/sh --user-group --groups delistd-staff "$staff_user"
useradd --no-create-home --shell /bin/sh --user-group "$outsider"
# as_user USER UMASK COMMAND...: a login as that user (its own groups, no root environment).
as_user() {
    local user=$1 mask=$2
    shift 2
    setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups \
        env -i PATH=/usr/bin:/bin HOME=/ USER="$user" LOGNAME="$user" sh -c 'umask "$0"; exec "$@"' "$mask" "$@"
}
as_service() {
    setpriv --reuid=delistd --regid=delistd-staff --clear-groups \
        env -i PATH=/usr/bin:/bin HOME=/var/lib/delistd sh -c 'umask 0007; exec "$@"' sh "$@"
}
db=$check_dir/delistd.sqlite
as_service mkdir "$check_dir"
as_service delistd demo --dir "$check_dir" >"$scratch/demo.out" 2>&1 || fail "delistd demo as the service user: $(tail -5 "$scratch/demo.out")"
mode=$(stat -c '%U:%G %a' "$db")
[[ $mode == "delistd:delistd-staff 660" ]] || fail "the service user's new database is $mode, expected delistd:delistd-staff 660"
# The staff CLI as a member of the group (umask 022, as a login shell has).
list=$(as_user "$staff_user" 022 delistd cases --config /nonexistent --db "$db" list 2>&1) ||
    fail "cases list as $staff_user (in delistd-staff): $list"
[[ $list == *DL-000001* ]] || fail "cases list as $staff_user shows no DL-000001: $list"
as_user "$staff_user" 022 delistd cases --config /nonexistent --db "$db" note DL-000001 "checked by a staff member" >/dev/null ||
    fail "cases note as $staff_user"
actor=$(sqlite3 "$db" "SELECT actor FROM events WHERE kind = 'note' AND text = 'checked by a staff member'")
[[ $actor == "$staff_user" ]] || fail "the history records the note under '$actor', expected $staff_user"
# The -wal and -shm files, made by one side while it holds the database open, written by the other.
for holder in delistd "$staff_user"; do
    # setpriv itself in the background (not a shell function, whose $! would be a subshell):
    # it execs env, sh execs delistd, so $! is the desk's own PID.
    desk=(delistd web --config /nonexistent --db "$db" --listen 127.0.0.1:0)
    # A file per holder: the background shell truncates it only when it gets to run, so a
    # shared one could still show the previous desk's "listening on".
    web_out=$scratch/web-$holder.out
    if [[ $holder == delistd ]]; then
        setpriv --reuid=delistd --regid=delistd-staff --clear-groups env -i PATH=/usr/bin:/bin HOME=/var/lib/delistd \
            sh -c 'umask 0007; exec "$@"' sh "${desk[@]}" >"$web_out" 2>"$web_out.err" &
        writer=$staff_user
    else
        setpriv --reuid="$holder" --regid="$(id -g "$holder")" --init-groups env -i PATH=/usr/bin:/bin HOME=/ \
            sh -c 'umask 022; exec "$@"' sh "${desk[@]}" >"$web_out" 2>"$web_out.err" &
        writer=delistd
    fi
    web_pid=$!
    for _ in $(seq 100); do
        grep -q 'listening on' "$web_out" && break
        sleep 0.1
    done
    grep -q 'listening on' "$web_out" || fail "delistd web as $holder did not start: $(cat "$web_out.err")"
    for f in "$db-wal" "$db-shm"; do
        got=$(stat -c '%U:%G %a' "$f" 2>/dev/null) || fail "no $f while $holder holds the database"
        [[ $got == "$holder:delistd-staff 660" ]] || fail "$f made by $holder is $got, expected $holder:delistd-staff 660"
    done
    if [[ $writer == delistd ]]; then
        as_service delistd cases --config /nonexistent --db "$db" note DL-000002 "written beside $holder" >/dev/null ||
            fail "cases note as delistd while $holder holds the database"
    else
        as_user "$writer" 022 delistd cases --config /nonexistent --db "$db" note DL-000002 "written beside $holder" >/dev/null ||
            fail "cases note as $writer while $holder holds the database"
    fi
    kill "$web_pid" && wait "$web_pid" || true
    web_pid=""
    # The desk may exit with its connection open, leaving the -wal behind (as after a crash;
    # SQLite recovers from it). Close the database cleanly, so the next holder makes them anew.
    as_service sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
    [[ ! -e $db-wal && ! -e $db-shm ]] || fail "the -wal/-shm of $db are left after the last connection closed"
    actor=$(sqlite3 "$db" "SELECT actor FROM events WHERE kind = 'note' AND text = 'written beside $holder'")
    [[ $actor == "$writer" ]] || fail "the note written beside $holder is under '$actor', expected $writer"
done
# Outside the group: refused, with the group named, exit 77 (EX_NOPERM), no panic.
set +e
refused=$(as_user "$outsider" 022 delistd cases --config /nonexistent --db "$db" list 2>&1)
code=$?
set -e
[[ $code -eq 77 ]] || fail "cases list as $outsider (not in delistd-staff) exited $code, expected 77: $refused"
[[ $refused == *"permission denied"*delistd-staff* && $refused != *panicked* ]] ||
    fail "the refusal of $outsider does not name the group: $refused"
echo "deb: the refusal reads: $refused"
echo "deb: staff without root: ok ($staff_user in delistd-staff lists and notes, history says so;" \
    "-wal/-shm 660 either way; $outsider refused with 77)"
cleanup_staff

dpkg --purge delistd >/dev/null
[[ ! -e /usr/bin/delistd ]] || fail "/usr/bin/delistd left after purge"
[[ ! -e /etc/delistd/delistd.toml ]] || fail "the conffile was left after purge"
if ((had_state == 0)); then
    rm -rf /var/lib/delistd
fi
trap 'rm -rf "$scratch"' EXIT
echo "deb: OK (installed, checked, purged)"
