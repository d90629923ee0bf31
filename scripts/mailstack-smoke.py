#!/usr/bin/env python3
"""Proves the loopback mail stack of scripts/mailstack.sh works end to end (stdlib only).

1. A sender mails delist@example.test over SMTP with STARTTLS; it is read back over IMAPS,
   verifying the test CA and the host name `localhost`; the server must advertise IDLE.
2. A reply with an EMPTY envelope sender (MAIL FROM:<>, as delistd sends its automatic replies,
   RFC 3834 §4) goes over SMTPS with AUTH to sender1@example.test, whose mailbox is watched with
   IMAP IDLE over the plain port after STARTTLS: the new message must be pushed, then read back.
3. Mail from loopback to another domain lands in catchall@example.test; an unknown
   example.test user is refused at RCPT; a scratch mailbox t-<unique>@example.test takes mail
   and logs in with the scratch password.
4. OAuth2 (unless the stack was started with DELISTD_STACK_OAUTH2=no): an OAuth-only mailbox
   o-<unique>@example.test takes mail, which is read back after an IMAP XOAUTH2 login with a JWT
   minted here with the stack's key; SMTP AUTH OAUTHBEARER is accepted; an expired token and a
   password are refused.

Reads the DELISTD_TEST_* variables from the environment, or from $DELISTD_STACK_DIR/env, or from
the stack last started (/tmp/delistd-mailstack.last). Exits 1 with a message on any failure.
"""

import base64
import email.message
import hashlib
import hmac
import json
import email.utils
import imaplib
import os
import select
import shlex
import smtplib
import socket
import ssl
import sys
import time
import uuid

DELIVERY_TIMEOUT = 30.0


class SmokeFailure(Exception):
    pass


def load_env():
    if "DELISTD_TEST_IMAPS_PORT" in os.environ:
        return dict(os.environ)
    stack_dir = os.environ.get("DELISTD_STACK_DIR")
    if not stack_dir and os.path.exists("/tmp/delistd-mailstack.last"):
        with open("/tmp/delistd-mailstack.last") as f:
            stack_dir = f.read().strip()
    if not stack_dir:
        raise SmokeFailure("no DELISTD_TEST_* variables and no stack directory: start the stack first")
    env = {}
    with open(os.path.join(stack_dir, "env")) as f:
        for line in f:
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, value = words[1].split("=", 1)
                env[key] = value
    return env


def load_users(path):
    users = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                users[parts[0]] = parts[1]
    return users


def tls_context(ca_file):
    # Verify exactly as a careful client does: the test CA only, and the name `localhost`.
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def make_message(sender, recipient, subject, body, auto=False):
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain="example.test")
    if auto:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(body)
    return msg


def imap_ok(result, what):
    typ, data = result
    if typ != "OK":
        raise SmokeFailure(f"IMAP {what} failed: {typ} {data!r}")
    return data


def find_message(imap, token, timeout=DELIVERY_TIMEOUT):
    """Polls INBOX until a message whose subject has `token` is there; returns its raw bytes."""
    deadline = time.monotonic() + timeout
    while True:
        imap_ok(imap.select("INBOX"), "SELECT INBOX")
        data = imap_ok(imap.uid("SEARCH", None, "SUBJECT", token), "UID SEARCH")
        uids = data[0].split() if data and data[0] else []
        if uids:
            data = imap_ok(imap.uid("FETCH", uids[-1], "(BODY.PEEK[])"), "UID FETCH")
            for part in data:
                if isinstance(part, tuple):
                    return part[1]
            raise SmokeFailure(f"FETCH of UID {uids[-1]!r} returned no body: {data!r}")
        if time.monotonic() > deadline:
            raise SmokeFailure(f"message with subject token {token} not delivered within {timeout:.0f} s")
        time.sleep(0.2)


class Idle:
    """IMAP IDLE (RFC 2177) by hand: imaplib in Python 3.11 has no idle()."""

    def __init__(self, imap):
        self.imap = imap
        self.tag = imap._new_tag()
        imap.send(self.tag + b" IDLE\r\n")
        line = imap.readline()
        if not line.startswith(b"+"):
            raise SmokeFailure(f"IDLE refused: {line!r}")

    def wait_exists(self, timeout):
        deadline = time.monotonic() + timeout
        sock = self.imap.socket()
        while time.monotonic() < deadline:
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
            if not pending:
                ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
            line = self.imap.readline()
            if not line:
                raise SmokeFailure("server closed the connection during IDLE")
            if line.startswith(b"* ") and line.rstrip().endswith(b"EXISTS"):
                return line.strip()
        raise SmokeFailure(f"no EXISTS pushed during IDLE within {timeout:.0f} s")

    def done(self):
        self.imap.send(b"DONE\r\n")
        while True:
            line = self.imap.readline()
            if not line:
                raise SmokeFailure("server closed the connection after DONE")
            if line.startswith(self.tag):
                if b" OK" not in line:
                    raise SmokeFailure(f"IDLE ended badly: {line!r}")
                return


def main():
    env = load_env()
    host = env["DELISTD_TEST_IMAP_HOST"]
    ctx = tls_context(env["DELISTD_TEST_CA_FILE"])
    users = load_users(env["DELISTD_TEST_USERS_FILE"])
    delist = env["DELISTD_TEST_DELIST_USER"]
    sender = "sender1@example.test"
    run = uuid.uuid4().hex[:12]
    imaps_port = int(env["DELISTD_TEST_IMAPS_PORT"])
    imap_port = int(env["DELISTD_TEST_IMAP_PORT"])
    smtp_port = int(env["DELISTD_TEST_SMTP_PORT"])
    smtps_port = int(env["DELISTD_TEST_SMTPS_PORT"])

    # 1. sender -> delist mailbox, SMTP + STARTTLS; read back over IMAPS.
    token1 = f"smoke-request-{run}"
    request = make_message(sender, delist, f"Delist request {token1}",
                           f"550 5.7.511 Access denied, banned sender[203.0.113.7]. {token1}\n")
    with smtplib.SMTP(host, smtp_port, timeout=20) as smtp:
        smtp.ehlo("client.example.test")
        if not smtp.has_extn("starttls"):
            raise SmokeFailure("SMTP port does not offer STARTTLS")
        smtp.starttls(context=ctx)
        smtp.ehlo("client.example.test")
        smtp.send_message(request, from_addr=sender, to_addrs=[delist])
    print(f"smoke: sent {token1} to {delist} over SMTP+STARTTLS (port {smtp_port})")

    with imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx, timeout=20) as imap:
        caps = imap_ok(imap.capability(), "CAPABILITY")[0].split()
        if b"IDLE" not in caps:
            raise SmokeFailure(f"IMAP server does not advertise IDLE: {caps!r}")
        imap_ok(imap.login(delist, users[delist]), f"LOGIN {delist}")
        raw = find_message(imap, token1)
        if token1.encode() not in raw or b"5.7.511" not in raw:
            raise SmokeFailure("the delivered request lost its body")
        imap.logout()
    print(f"smoke: read {token1} back over IMAPS (port {imaps_port}), IDLE advertised, CA verified")

    # 2. automatic reply with MAIL FROM:<> over SMTPS + AUTH, pushed to an IDLE session.
    token2 = f"smoke-reply-{run}"
    reply = make_message(delist, sender, f"Re: Delist request {token2}",
                         f"Your request is case DL-TEST. {token2}\n", auto=True)
    imap = imaplib.IMAP4(host, imap_port, timeout=20)
    try:
        imap.starttls(ssl_context=ctx)
        imap_ok(imap.login(sender, users[sender]), f"LOGIN {sender}")
        imap_ok(imap.select("INBOX"), "SELECT INBOX")
        idle = Idle(imap)
        with smtplib.SMTP_SSL(host, smtps_port, context=ctx, timeout=20) as smtp:
            smtp.login(delist, users[delist])
            refused = smtp.sendmail("", [sender], reply.as_bytes())
            if refused:
                raise SmokeFailure(f"reply refused: {refused!r}")
        print(f"smoke: sent {token2} with MAIL FROM:<> over SMTPS+AUTH (port {smtps_port})")
        pushed = idle.wait_exists(DELIVERY_TIMEOUT)
        idle.done()
        raw = find_message(imap, token2, timeout=5)
        if b"Return-Path: <>" not in raw:
            raise SmokeFailure("the reply was not delivered with an empty envelope sender (Return-Path: <>)")
        imap.logout()
    finally:
        try:
            imap.shutdown()
        except OSError:
            pass
    print(f"smoke: IDLE pushed {pushed.decode()}; read {token2} back over IMAP+STARTTLS (port {imap_port})")

    # 3. other domains are kept in catchall@, unknown local users are refused.
    token3 = f"smoke-elsewhere-{run}"
    outside = make_message(delist, "someone@elsewhere.invalid", f"Re: {token3}", f"{token3}\n", auto=True)
    with smtplib.SMTP(host, smtp_port, timeout=20) as smtp:
        smtp.sendmail("", ["someone@elsewhere.invalid"], outside.as_bytes())
        code, text = smtp.mail("")
        if code != 250:
            raise SmokeFailure(f"MAIL FROM:<> refused: {code} {text!r}")
        code, text = smtp.rcpt("nobody@example.test")
        if code < 500:
            raise SmokeFailure(f"unknown user nobody@example.test was not refused: {code} {text!r}")
        smtp.rset()
    with imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx, timeout=20) as imap:
        imap_ok(imap.login("catchall@example.test", users["catchall@example.test"]), "LOGIN catchall")
        find_message(imap, token3)
        imap.logout()
    print("smoke: mail to another domain kept in catchall@example.test; unknown user refused at RCPT")

    scratch = f"{env['DELISTD_TEST_SCRATCH_PREFIX']}smoke-{run}@{env['DELISTD_TEST_SCRATCH_DOMAIN']}"
    token4 = f"smoke-scratch-{run}"
    with smtplib.SMTP(host, smtp_port, timeout=20) as smtp:
        smtp.sendmail(sender, [scratch], make_message(sender, scratch, token4, f"{token4}\n").as_bytes())
    with imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx, timeout=20) as imap:
        imap_ok(imap.login(scratch, env["DELISTD_TEST_SCRATCH_PASSWORD"]), f"LOGIN {scratch}")
        find_message(imap, token4)
        imap.logout()
    with imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx, timeout=20) as imap:
        try:
            imap.login(scratch, "wrong-password")
        except imaplib.IMAP4.error:
            pass
        else:
            raise SmokeFailure(f"{scratch} logged in with a wrong password")
    print(f"smoke: scratch mailbox {scratch} received mail; wrong password refused")

    # 4. OAuth2: an OAuth-only mailbox, tokens checked by Dovecot for IMAP and Postfix.
    key = env.get("DELISTD_TEST_OAUTH2_KEY", "")
    if key:
        oauth_user = f"{env['DELISTD_TEST_OAUTH2_PREFIX']}smoke-{run}@example.test"
        token5 = f"smoke-oauth-{run}"
        with smtplib.SMTP(host, smtp_port, timeout=20) as smtp:
            smtp.sendmail(sender, [oauth_user], make_message(sender, oauth_user, token5, f"{token5}\n").as_bytes())
        good, expired = jwt(key, oauth_user, 300), jwt(key, oauth_user, -60)
        with imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx, timeout=20) as imap:
            sasl = f"user={oauth_user}\x01auth=Bearer {good}\x01\x01".encode()
            imap_ok(imap.authenticate("XOAUTH2", lambda _: sasl), f"AUTHENTICATE XOAUTH2 {oauth_user}")
            find_message(imap, token5)
            imap.logout()
        for what, attempt in [
            ("an expired token", lambda imap: imap.authenticate(
                "XOAUTH2", lambda c: b"" if c else f"user={oauth_user}\x01auth=Bearer {expired}\x01\x01".encode())),
            ("a password", lambda imap: imap.login(oauth_user, env["DELISTD_TEST_SCRATCH_PASSWORD"])),
        ]:
            with imaplib.IMAP4_SSL(host, imaps_port, ssl_context=ctx, timeout=20) as imap:
                try:
                    attempt(imap)
                except imaplib.IMAP4.error:
                    pass
                else:
                    raise SmokeFailure(f"{oauth_user} logged in with {what}")
        with smtplib.SMTP_SSL(host, smtps_port, context=ctx, timeout=20) as smtp:
            smtp.ehlo()
            ir = base64.b64encode(f"n,a={oauth_user},\x01auth=Bearer {good}\x01\x01".encode()).decode()
            code, text = smtp.docmd("AUTH", f"OAUTHBEARER {ir}")
            if code != 235:
                raise SmokeFailure(f"SMTP AUTH OAUTHBEARER refused: {code} {text!r}")
        print(f"smoke: OAuth-only mailbox {oauth_user}: IMAP XOAUTH2 and SMTP OAUTHBEARER with a JWT; "
              "expired token and password refused")
    print("smoke: OK")


def jwt(key_b64, user, lifetime):
    """An HS256 JWT for `user` that Dovecot's oauth2 passdb accepts (or, expired, refuses)."""
    def b64url(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": user, "email": user, "iat": now - 120, "exp": now + lifetime}).encode())
    sig = b64url(hmac.new(base64.b64decode(key_b64), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


if __name__ == "__main__":
    try:
        main()
    except SmokeFailure as e:
        print(f"smoke: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error, ssl.SSLError, KeyError) as e:
        print(f"smoke: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
