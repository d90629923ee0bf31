#!/usr/bin/env bash
# The real mail stack for delistd's integration tests: Debian's Dovecot (IMAP, LMTP) and Postfix
# (SMTP), run as root from a state directory and listening on 127.0.0.1 only.
#
#   scripts/mailstack.sh start            start both (again: starts whatever is down); prints env
#   scripts/mailstack.sh stop             stop both; no process is left behind
#   scripts/mailstack.sh status           exit 0 when both run
#   scripts/mailstack.sh env              shell-sourceable variables for the tests
#   scripts/mailstack.sh restart-dovecot  fault injection: Dovecot goes away and comes back
#   scripts/mailstack.sh stop-postfix | start-postfix | stop-dovecot | start-dovecot
#
# State directory: $DELISTD_STACK_DIR, else a fresh `mktemp -d` at start (its path is remembered
# in $POINTER so the other commands find it). Ports: free ones are picked at first start, or set
# DELISTD_TEST_{IMAP,IMAPS,SMTP,SMTPS}_PORT before it; they are kept in $STACK_DIR/env.
#
# OAuth2 (on unless DELISTD_STACK_OAUTH2=no at start): Dovecot also takes XOAUTH2 and OAUTHBEARER
# (RFC 7628) for IMAP and, through Dovecot SASL, for Postfix's SMTP AUTH on the SMTPS port. Its
# oauth2 passdb validates JWTs locally (introspection_mode = local) against an HS256 key this
# script writes; tests mint tokens with the same key ($DELISTD_TEST_OAUTH2_KEY, base64). Every
# o-<anything>@example.test is a mailbox that has no password at all: it takes only OAuth2.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATES=$HERE/mailstack
POINTER=/tmp/delistd-mailstack.last
MAIL_USER=vmail

# Test users: address and password. delist@ is the mailbox delistd reads; senders write to it;
# ops@ is staff; catchall@ receives whatever loopback clients send outside example.test.
USERS=(
    "delist@example.test delist-secret"
    "sender1@example.test sender1-secret"
    "sender2@example.test sender2-secret"
    "sender3@example.test sender3-secret"
    "sender4@example.test sender4-secret"
    "sender5@example.test sender5-secret"
    "ops@example.test ops-secret"
    "catchall@example.test catchall-secret"
)
# Besides those, every t-<anything>@example.test is a mailbox with this password, created on
# first use: a test that wants a mailbox of its own picks a unique name.
SCRATCH_PASSWORD=scratch-secret
# OAuth-only mailboxes: o-<anything>@example.test, created on first use like the scratch ones.
OAUTH_PREFIX=o-

die() {
    echo "mailstack: $*" >&2
    exit 1
}
say() { echo "mailstack: $*" >&2; }

# --- where the state lives -------------------------------------------------------------------

resolve_dir() {
    local create=$1
    if [[ -n ${DELISTD_STACK_DIR:-} ]]; then
        STACK_DIR=$DELISTD_STACK_DIR
        [[ $create == yes ]] && mkdir -p "$STACK_DIR"
    elif [[ $create == yes ]]; then
        STACK_DIR=$(mktemp -d /tmp/delistd-stack.XXXXXX)
    elif [[ -s $POINTER ]]; then
        STACK_DIR=$(cat "$POINTER")
    else
        die "no stack: set DELISTD_STACK_DIR or run '$0 start' first"
    fi
    [[ -d $STACK_DIR ]] || die "state directory $STACK_DIR does not exist"
    STACK_DIR=$(cd "$STACK_DIR" && pwd -P)
    RUN_DIR=$STACK_DIR/dovecot/run
    # Unix sockets live in RUN_DIR; sun_path holds 108 bytes, the longest name is 'auth-client'
    # plus Dovecot's own 'login/...' and 'token-login/...' names.
    ((${#RUN_DIR} <= 70)) || die "state directory path too long for unix sockets: $STACK_DIR (use a shorter DELISTD_STACK_DIR)"
    STATE_DIR=$STACK_DIR/dovecot/state
    MAIL_DIR=$STACK_DIR/mail
    LOG_DIR=$STACK_DIR/log
    TLS_DIR=$STACK_DIR/tls
    CONF_DIR=$STACK_DIR/postfix/etc
    QUEUE_DIR=$STACK_DIR/postfix/queue
    DATA_DIR=$STACK_DIR/postfix/data
    DOVECOT_CONF=$STACK_DIR/dovecot/dovecot.conf
    PASSWD_FILE=$STACK_DIR/dovecot/users.passwd
    USERS_FILE=$STACK_DIR/users.txt
    ENV_FILE=$STACK_DIR/env
    INSTANCE=$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-8)
    OAUTH2_KEY_DIR=$STACK_DIR/dovecot/oauth2-keys
}

# --- ports -----------------------------------------------------------------------------------

# True when nothing listens on TCP port $1 of 127.0.0.1 or the wildcard address. Reads the
# kernel's table rather than connecting, which would leave noise in the daemons' logs.
port_free() {
    local hex
    hex=$(printf '%04X' "$1")
    ! awk -v p="$hex" '$4 == "0A" && ($2 == "0100007F:" p || $2 == "00000000:" p) {found = 1} END {exit !found}' \
        /proc/net/tcp
}

# An unused port below Linux's ephemeral range (32768+), so that no client connection can take it
# as its source port while Dovecot or Postfix is down for a fault-injection restart.
# Skips ports already chosen for this stack and any port with a socket in any state.
pick_port() {
    local port hex taken=" $* "
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        [[ $taken == *" $port "* ]] && continue
        hex=$(printf '%04X' "$port")
        if ! awk -v p="$hex" 'substr($2, index($2, ":") + 1) == p {found = 1} END {exit !found}' \
            /proc/net/tcp /proc/net/tcp6; then
            echo "$port"
            return
        fi
    done
    die "could not find a free port on 127.0.0.1"
}

# The value of one variable in the env file, read without sourcing it.
env_value() {
    sed -n "s/^export $1='\\(.*\\)'\$/\\1/p" "$ENV_FILE"
}

choose_ports() {
    # A stack started before keeps its ports: tests and fault injection rely on them.
    if [[ -s $ENV_FILE ]]; then
        IMAP_PORT=$(env_value DELISTD_TEST_IMAP_PORT)
        IMAPS_PORT=$(env_value DELISTD_TEST_IMAPS_PORT)
        SMTP_PORT=$(env_value DELISTD_TEST_SMTP_PORT)
        SMTPS_PORT=$(env_value DELISTD_TEST_SMTPS_PORT)
        REFUSE_PORT=$(env_value DELISTD_TEST_REFUSE_PORT)
        [[ -n $REFUSE_PORT ]] || REFUSE_PORT=$(pick_port "$IMAP_PORT" "$IMAPS_PORT" "$SMTP_PORT" "$SMTPS_PORT")
        return
    fi
    IMAP_PORT=${DELISTD_TEST_IMAP_PORT:-$(pick_port)}
    IMAPS_PORT=${DELISTD_TEST_IMAPS_PORT:-$(pick_port "$IMAP_PORT")}
    SMTP_PORT=${DELISTD_TEST_SMTP_PORT:-$(pick_port "$IMAP_PORT" "$IMAPS_PORT")}
    SMTPS_PORT=${DELISTD_TEST_SMTPS_PORT:-$(pick_port "$IMAP_PORT" "$IMAPS_PORT" "$SMTP_PORT")}
    REFUSE_PORT=${DELISTD_TEST_REFUSE_PORT:-$(pick_port "$IMAP_PORT" "$IMAPS_PORT" "$SMTP_PORT" "$SMTPS_PORT")}
}

# --- one-time set-up of a state directory ----------------------------------------------------

ensure_mail_user() {
    if ! id -u "$MAIL_USER" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$MAIL_USER"
    fi
    MAIL_UID=$(id -u "$MAIL_USER")
    MAIL_GID=$(id -g "$MAIL_USER")
}

# rustls (delistd's TLS) rejects a self-signed certificate that is its own CA, so: a test CA,
# and a separate leaf for localhost / 127.0.0.1 signed by it.
make_certs() {
    [[ -s $TLS_DIR/server.crt && -s $TLS_DIR/ca.crt ]] && return
    mkdir -p "$TLS_DIR"
    local log=$TLS_DIR/openssl.log
    {
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" -days 3650 \
            -subj "/O=delistd tests/CN=delistd test CA $INSTANCE" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj "/CN=localhost"
        printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            "subjectKeyIdentifier=hash" \
            "authorityKeyIdentifier=keyid" >"$TLS_DIR/server.ext"
        openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
            -CAcreateserial -out "$TLS_DIR/server.crt" -days 825 -extfile "$TLS_DIR/server.ext"
    } >"$log" 2>&1 || { cat "$log" >&2; die "openssl failed making the test certificates"; }
    chmod 600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key"
    chmod 644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
}

fill() {
    sed -e "s|@INSTANCE@|$INSTANCE|g" -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@STATE_DIR@|$STATE_DIR|g" \
        -e "s|@LOG_DIR@|$LOG_DIR|g" -e "s|@TLS_DIR@|$TLS_DIR|g" -e "s|@MAIL_DIR@|$MAIL_DIR|g" \
        -e "s|@PASSWD_FILE@|$PASSWD_FILE|g" -e "s|@SCRATCH_PASSWORD@|$SCRATCH_PASSWORD|g" -e "s|@MAIL_UID@|$MAIL_UID|g" -e "s|@MAIL_GID@|$MAIL_GID|g" \
        -e "s|@CONF_DIR@|$CONF_DIR|g" -e "s|@QUEUE_DIR@|$QUEUE_DIR|g" -e "s|@DATA_DIR@|$DATA_DIR|g" \
        -e "s|@IMAP_PORT@|$IMAP_PORT|g" -e "s|@IMAPS_PORT@|$IMAPS_PORT|g" \
        -e "s|@SMTP_PORT@|$SMTP_PORT|g" -e "s|@SMTPS_PORT@|$SMTPS_PORT|g" \
        -e "s|@REFUSE_PORT@|$REFUSE_PORT|g" "$1" >"$2"
    if grep -q '@[A-Z_]*@' "$2"; then
        die "unfilled placeholder in $2: $(grep -o '@[A-Z_]*@' "$2" | head -1)"
    fi
}

write_env() {
    local delist_password
    delist_password=$(awk '$1 == "delist@example.test" {print $2}' "$USERS_FILE")
    cat >"$ENV_FILE.tmp" <<EOF
# delistd test mail stack in $STACK_DIR ($(date -u +%Y-%m-%dT%H:%M:%SZ)). Source this file.
export DELISTD_TEST_STACK_DIR='$STACK_DIR'
export DELISTD_TEST_IMAP_HOST='localhost'
export DELISTD_TEST_IMAP_ADDR='127.0.0.1'
export DELISTD_TEST_IMAP_PORT='$IMAP_PORT'
export DELISTD_TEST_IMAPS_PORT='$IMAPS_PORT'
export DELISTD_TEST_SMTP_HOST='localhost'
export DELISTD_TEST_SMTP_PORT='$SMTP_PORT'
export DELISTD_TEST_SMTPS_PORT='$SMTPS_PORT'
export DELISTD_TEST_REFUSE_PORT='$REFUSE_PORT'
export DELISTD_TEST_CA_FILE='$TLS_DIR/ca.crt'
export DELISTD_TEST_USERS_FILE='$USERS_FILE'
export DELISTD_TEST_DELIST_USER='delist@example.test'
export DELISTD_TEST_DELIST_PASSWORD='$delist_password'
export DELISTD_TEST_SCRATCH_PREFIX='t-'
export DELISTD_TEST_SCRATCH_DOMAIN='example.test'
export DELISTD_TEST_SCRATCH_PASSWORD='$SCRATCH_PASSWORD'
export DELISTD_TEST_MAIL_DIR='$MAIL_DIR'
export DELISTD_TEST_DOVECOT_LOG='$LOG_DIR/dovecot.log'
export DELISTD_TEST_POSTFIX_LOG='$LOG_DIR/postfix.log'
export DELISTD_TEST_MAILSTACK='$HERE/mailstack.sh'
export DELISTD_TEST_DOVECOT_CONF='$DOVECOT_CONF'
export DELISTD_TEST_OAUTH2_KEY='$(oauth2_key)'
export DELISTD_TEST_OAUTH2_PREFIX='$OAUTH_PREFIX'
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    chmod 644 "$ENV_FILE"
}

prepare() {
    ensure_mail_user
    choose_ports
    # Dovecot's login processes (dovenull) and Postfix (postfix) must traverse the tree.
    chmod 755 "$STACK_DIR"
    mkdir -p "$RUN_DIR" "$STATE_DIR" "$LOG_DIR" "$CONF_DIR" "$QUEUE_DIR" "$DATA_DIR" "$MAIL_DIR"
    chmod 755 "$STACK_DIR/dovecot" "$RUN_DIR" "$LOG_DIR" "$STACK_DIR/postfix" "$CONF_DIR" "$QUEUE_DIR"
    chown "$MAIL_USER:$MAIL_USER" "$MAIL_DIR"
    chown postfix:postfix "$DATA_DIR"
    chmod 700 "$DATA_DIR"
    chmod 750 "$MAIL_DIR"
    make_certs

    # users.txt: "address password" per line, for tests. The passwd-file is Dovecot's view of it.
    if [[ ! -s $USERS_FILE ]]; then
        printf '%s\n' "${USERS[@]}" >"$USERS_FILE"
    fi
    chmod 644 "$USERS_FILE"
    awk 'NF == 2 {print $1 ":{PLAIN}" $2 "::::::"}' "$USERS_FILE" >"$PASSWD_FILE"
    chown root:dovecot "$PASSWD_FILE"
    chmod 640 "$PASSWD_FILE"
    awk 'NF == 2 {print $1 " " $1}' "$USERS_FILE" >"$CONF_DIR/vmailbox"
    # Mail to the refuse.test domains goes out to the refusing smtpd (not to catchall@).
    printf '%s\n' 'if !/@([a-z0-9-]+\.)?refuse\.test$/' '!/@example\.test$/ catchall@example.test' 'endif' >"$CONF_DIR/catchall.regexp"
    # The provider's rejections, one domain each: as Exchange Online words them, the
    # address in IPv4 and IPv6 form (issue 10: genuine bounces, written by Postfix).
    printf '%s\n' \
        "ban4.refuse.test 550 5.7.511 Access denied, banned sender[203.0.113.201]. To request removal from this list, forward this message to delist@messaging.microsoft.com. For more information please go to https://go.microsoft.com/fwlink/?LinkId=526653. [AM5EUR02FT012.eop-EUR02.prod.protection.outlook.com]" \
        "ban4r.refuse.test 550 5.7.511 Access denied, banned sender[203.0.113.205]. To request removal from this list, forward this message to delist@messaging.microsoft.com." \
        "ban6.refuse.test 550 5.7.511 Access denied, banned sender[2001:db8::202]. To request removal from this list, forward this message to delist@messaging.microsoft.com. For more information please go to https://go.microsoft.com/fwlink/?LinkId=526653." \
        "portal.refuse.test 550 5.7.606 Access denied, banned sending IP [203.0.113.203]. To request removal from this list please visit https://sender.office.com/ and follow the directions." \
        "tenant.refuse.test 550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains. For more information please go to https://go.microsoft.com/fwlink/?LinkId=526653." \
        >"$CONF_DIR/refuse"
    printf '%s\n' "refuse.test smtp:[127.0.0.1]:$REFUSE_PORT" ".refuse.test smtp:[127.0.0.1]:$REFUSE_PORT" >"$CONF_DIR/transport"
    printf '%s\n' '/^t-[^@]+@example\.test$/ scratch' '/^o-[^@]+@example\.test$/ oauth' >"$CONF_DIR/scratch.regexp"

    fill "$TEMPLATES/dovecot.conf.in" "$DOVECOT_CONF"
    prepare_oauth2
    fill "$TEMPLATES/main.cf.in" "$CONF_DIR/main.cf"
    fill "$TEMPLATES/master.cf.in" "$CONF_DIR/master.cf"
    touch "$LOG_DIR/postfix.log" "$LOG_DIR/dovecot.log"
    write_env
}

# --- OAuth2 ----------------------------------------------------------------------------------

# The HS256 key of the test "identity provider", base64, or nothing when OAuth2 is off.
oauth2_key() {
    cat "$OAUTH2_KEY_DIR/default/HS256/default" 2>/dev/null || true
}

# Dovecot's oauth2 passdb, validating JWTs locally (2.3.16+; Debian 12 has 2.3.19). Its key
# dict is a folder: a token without "kid" and "azp" is checked with the key at
# shared/default/<alg>/default, which the fs dict reads from <prefix>default/<alg>/default, as
# base64 (src/lib-oauth2/oauth2-jwt.c). The user is the token's "email", matched against the
# login name. dovecot.conf includes oauth2.conf if it exists. An o-* mailbox has no password,
# so a PLAIN or LOGIN attempt is checked as a token, and fails.
prepare_oauth2() {
    local conf=$STACK_DIR/dovecot/oauth2.conf
    if [[ ${DELISTD_STACK_OAUTH2:-yes} == no ]]; then
        rm -rf "$conf" "$OAUTH2_KEY_DIR"
        return
    fi
    if [[ ! -s $OAUTH2_KEY_DIR/default/HS256/default ]]; then
        mkdir -p "$OAUTH2_KEY_DIR/default/HS256"
        head -c 32 /dev/urandom | base64 -w0 >"$OAUTH2_KEY_DIR/default/HS256/default"
    fi
    chown -R root:dovecot "$OAUTH2_KEY_DIR"
    chmod -R u=rwX,g=rX,o= "$OAUTH2_KEY_DIR"
    cat >"$STACK_DIR/dovecot/oauth2.conf.ext" <<EOF
# Written by scripts/mailstack.sh: JWTs signed with the test key, validated with no network.
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$OAUTH2_KEY_DIR/
username_attribute = email
EOF
    cat >"$conf" <<EOF
# Written by scripts/mailstack.sh (DELISTD_STACK_OAUTH2=no leaves it out).
auth_mechanisms = \$auth_mechanisms xoauth2 oauthbearer
# Only for the o-* mailboxes, and with no "mechanisms" filter: in Dovecot 2.3.19 a passdb that
# a mechanism filter skips crashes the auth process (signal 11) for Postfix's SASL requests.
passdb {
  driver = oauth2
  username_filter = $OAUTH_PREFIX*@example.test
  args = $STACK_DIR/dovecot/oauth2.conf.ext
}
EOF
}

# --- Dovecot ---------------------------------------------------------------------------------

# True while process $1 runs. A killed daemon can linger a moment as a zombie, which kill -0
# still reports; its pid file would then make `start` believe it is up.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Waits (5 s at most) until the exited processes are reaped: the daemons are reparented to
# PID 1, which may take seconds, and `stop` promises that nothing is left, not even a zombie.
# (Only `stop` waits: a zombie holds no port, and fault injection wants a quick restart.)
STOPPED_PIDS=()
wait_reaped() {
    local pid
    for pid in "$@"; do
        for _ in $(seq 1 50); do
            [[ -e /proc/$pid ]] || break
            sleep 0.1
        done
    done
}

dovecot_pid() {
    local pid
    pid=$(cat "$RUN_DIR/master.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && alive "$pid" && [[ $(readlink "/proc/$pid/exe") == /usr/sbin/dovecot ]] && echo "$pid"
}

wait_port() {
    local port=$1
    for _ in $(seq 1 100); do
        port_free "$port" || return 0
        sleep 0.1
    done
    return 1
}

start_dovecot() {
    if dovecot_pid >/dev/null; then
        say "dovecot already running (pid $(dovecot_pid))"
        return
    fi
    local mark port
    for port in "$IMAP_PORT" "$IMAPS_PORT"; do
        port_free "$port" || die "127.0.0.1:$port is already taken by another program"
    done
    # A master killed hard leaves its pid file; Dovecot refuses to start while that pid answers
    # kill -0, which a not-yet-reaped zombie does.
    rm -f "$RUN_DIR/master.pid"
    mark=$(wc -l <"$LOG_DIR/dovecot.log")
    if ! dovecot -c "$DOVECOT_CONF" 2>"$LOG_DIR/dovecot.start.err"; then
        cat "$LOG_DIR/dovecot.start.err" >&2
        tail -n "+$((mark + 1))" "$LOG_DIR/dovecot.log" | tail -n 30 >&2
        die "dovecot failed to start (config $DOVECOT_CONF)"
    fi
    if ! wait_port "$IMAPS_PORT" || ! wait_port "$IMAP_PORT" || ! dovecot_pid >/dev/null; then
        tail -n "+$((mark + 1))" "$LOG_DIR/dovecot.log" | tail -n 30 >&2
        die "dovecot did not come up on 127.0.0.1:$IMAP_PORT/$IMAPS_PORT (log: $LOG_DIR/dovecot.log)"
    fi
    say "dovecot running (pid $(dovecot_pid)), imap 127.0.0.1:$IMAP_PORT, imaps 127.0.0.1:$IMAPS_PORT"
}

stop_dovecot() {
    local pid
    pid=$(dovecot_pid) || { say "dovecot not running"; return 0; }
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && die "dovecot master $pid did not exit within 10 s"
    STOPPED_PIDS+=("$pid")
    say "dovecot stopped"
}

# --- Postfix ---------------------------------------------------------------------------------

postfix_running() {
    postfix -c "$CONF_DIR" status >/dev/null 2>&1
}

postfix_pid() {
    local pid
    pid=$(awk '{print $1}' "$QUEUE_DIR/pid/master.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && alive "$pid" && echo "$pid"
}

start_postfix() {
    if postfix_running; then
        say "postfix already running (pid $(postfix_pid || echo '?'))"
        return
    fi
    local mark out port
    for port in "$SMTP_PORT" "$SMTPS_PORT"; do
        port_free "$port" || die "127.0.0.1:$port is already taken by another program"
    done
    mark=$(wc -l <"$LOG_DIR/postfix.log")
    # Without a terminal, `postfix start` reports its errors only to the log: read it back.
    if ! out=$(postfix -c "$CONF_DIR" start 2>&1 </dev/null); then
        echo "$out" >&2
        tail -n "+$((mark + 1))" "$LOG_DIR/postfix.log" | tail -n 30 >&2
        die "postfix failed to start (config $CONF_DIR)"
    fi
    if ! wait_port "$SMTP_PORT" || ! wait_port "$SMTPS_PORT" || ! postfix_running; then
        echo "$out" >&2
        tail -n "+$((mark + 1))" "$LOG_DIR/postfix.log" | tail -n 30 >&2
        die "postfix did not come up on 127.0.0.1:$SMTP_PORT/$SMTPS_PORT (log: $LOG_DIR/postfix.log)"
    fi
    say "postfix running (pid $(postfix_pid || echo '?')), smtp 127.0.0.1:$SMTP_PORT, smtps 127.0.0.1:$SMTPS_PORT"
}

stop_postfix() {
    local pid
    if ! pid=$(postfix_pid); then
        say "postfix not running"
        return 0
    fi
    postfix -c "$CONF_DIR" stop >/dev/null 2>&1 </dev/null || true
    for _ in $(seq 1 100); do
        alive "$pid" || break
        sleep 0.1
    done
    alive "$pid" && die "postfix master $pid did not exit within 10 s"
    STOPPED_PIDS+=("$pid")
    say "postfix stopped"
}

# --- leftovers -------------------------------------------------------------------------------

# Processes that belong to this stack: Postfix daemons chdir to the queue directory, Dovecot's
# run in or chroot to its base directory or a mail home, all of which are under STACK_DIR.
stack_pids() {
    local p link exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case $exe in
        /usr/sbin/dovecot | /usr/lib/dovecot/* | /usr/lib/postfix/sbin/*) ;;
        *) continue ;;
        esac
        for link in cwd root; do
            link=$(readlink "$p/$link" 2>/dev/null) || continue
            if [[ $link == "$STACK_DIR" || $link == "$STACK_DIR"/* ]]; then
                echo "${p#/proc/}"
                break
            fi
        done
    done
}

reap_leftovers() {
    local pids
    for _ in $(seq 1 50); do
        pids=$(stack_pids)
        [[ -z $pids ]] && return 0
        sleep 0.1
    done
    say "processes still in $STACK_DIR after stop, killing: ${pids//$'\n'/ }"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
    pids=$(stack_pids)
    [[ -z $pids ]] || die "processes left behind: ${pids//$'\n'/ }"
}

# --- commands --------------------------------------------------------------------------------

[[ $(id -u) -eq 0 ]] || die "must run as root (postfix start requires it)"
for tool in dovecot postfix openssl; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-test-deps.sh"
done
case $(dovecot --version) in
2.3.*) ;;
*) die "dovecot $(dovecot --version) found; scripts/mailstack/dovecot.conf.in is written for 2.3" ;;
esac

cmd=${1:-}
case $cmd in
start)
    resolve_dir yes
    # The config is rewritten on each start so that template changes take effect; it is only
    # read when a daemon (re)starts.
    prepare
    start_dovecot
    start_postfix
    [[ -n ${DELISTD_STACK_DIR:-} ]] || echo "$STACK_DIR" >"$POINTER"
    cat "$ENV_FILE"
    ;;
stop)
    resolve_dir no
    stop_postfix
    stop_dovecot
    reap_leftovers
    wait_reaped "${STOPPED_PIDS[@]}"
    ;;
status)
    resolve_dir no
    ok=0
    if pid=$(dovecot_pid); then echo "dovecot: running (pid $pid)"; else echo "dovecot: stopped"; ok=1; fi
    if postfix_running; then echo "postfix: running (pid $(postfix_pid || echo '?'))"; else echo "postfix: stopped"; ok=1; fi
    echo "state: $STACK_DIR"
    exit $ok
    ;;
env)
    resolve_dir no
    [[ -s $ENV_FILE ]] || die "no env file in $STACK_DIR: run '$0 start'"
    cat "$ENV_FILE"
    ;;
restart-dovecot)
    resolve_dir no
    choose_ports
    stop_dovecot
    start_dovecot
    ;;
stop-dovecot)
    resolve_dir no
    stop_dovecot
    ;;
start-dovecot)
    resolve_dir no
    choose_ports
    start_dovecot
    ;;
stop-postfix)
    resolve_dir no
    stop_postfix
    ;;
start-postfix)
    resolve_dir no
    choose_ports
    start_postfix
    ;;
*)
    echo "usage: $0 start|stop|status|env|restart-dovecot|stop-postfix|start-postfix|stop-dovecot|start-dovecot" >&2
    exit 2
    ;;
esac
