"""Identity, black box: every kind of credential made with `sluice creds`
logs in with a real client (swaks and smtplib for passwords with PLAIN and
LOGIN, an API key given as the password, SCRAM-SHA-256 from a SCRAM client
written here with hashlib/hmac, client certificates with openssl s_client and
Python ssl); wrong secrets and unknown users get the same 535; repeated
failures from one address are slowed down, then blocked with 421; revoked
credentials stop working, and changes made while the relay runs count at
once."""
import base64
import hashlib
import hmac
import os
import re
import select
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import PASSWORD, legacy_users_file, wait_for
from support_smtp import Conn, client_tls_context, message, new_msgid, wait_captured_id

SWAKS = "/usr/bin/swaks"
OTHER_PASSWORD = "another long password"


@pytest.fixture
def relay(make_sluice):
    """A relay with the credential 'shop' (password, SCRAM keys from it)
    allowed to send as *@shop.example."""
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    add_password(s, "shop", "--allow-from", "*@shop.example")
    return s.start()


def add_password(s, name, *args, password=PASSWORD):
    s.cli("creds", "add", "--init", name, "--password", *args, input=password + "\n")


def add_api_key(s, name, *args):
    out = s.cli("creds", "add", "--init", name, "--api-key", *args).stdout
    m = re.search(r"sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", out)
    assert m, out
    return m.group(0)


def shop_message(msgid, sender="orders@shop.example"):
    return (f"From: Shop <{sender}>\r\nTo: rcpt@example.net\r\nSubject: policy\r\n"
            f"Message-ID: <{msgid}>\r\n\r\nHello.\r\n").encode()


def auth_events(s, ok=True):
    return s.events("auth.success" if ok else "auth.failure")


def assert_sends_as(s, conn, cred, sender="orders@shop.example"):
    """conn (logged in) sends one message; it is accepted, captured, and
    recorded as sent by cred."""
    msgid = new_msgid()
    r = conn.send_message(shop_message(msgid, sender), sender=sender)
    assert r.code == 250, str(r)
    m = wait_captured_id(s, msgid)
    assert m["envelope"]["meta"].get("auth") == cred, m["envelope"]
    ev = [e for e in s.events("smtp.accepted") if e.get("message_id") == msgid]
    assert ev and ev[0].get("credential") == cred, ev


# ---- passwords: PLAIN and LOGIN with real clients ----

@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_password(relay, mech):
    msgid = new_msgid()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as c:
        c.starttls(context=client_tls_context())
        c.ehlo("client.test")
        assert "SCRAM-SHA-256" in c.esmtp_features["auth"].split()
        auth = c.auth_plain if mech == "PLAIN" else c.auth_login
        c.user, c.password = "shop", PASSWORD
        code, _ = c.auth(mech, auth, initial_response_ok=(mech == "PLAIN"))
        assert code == 235
        c.sendmail("orders@shop.example", ["rcpt@example.net"], shop_message(msgid))
    m = wait_captured_id(relay, msgid)
    assert m["envelope"]["meta"]["auth"] == "shop"
    ev = auth_events(relay)[-1]
    assert ev["credential"] == "shop" and ev["method"] == mech, ev


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_password(relay, mech):
    r = subprocess.run([SWAKS, "--server", f"127.0.0.1:{relay.port}", "--tls", "--auth", mech,
                        "--auth-user", "shop", "--auth-password", PASSWORD,
                        "--from", "orders@shop.example", "--to", "rcpt@example.net",
                        "--header", "From: orders@shop.example", "--helo", "client.test"],
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"<~\*? +235 2\.7\.0", out), out
    assert re.search(r"<~\*? +250 2\.0\.0 Ok: queued as", out), out


def test_wrong_secrets_and_unknown_users_look_the_same(relay):
    add_password(relay, "gone", password=OTHER_PASSWORD)
    relay.cli("creds", "revoke", "gone")
    before = len(auth_events(relay, ok=False))
    replies = []
    for user, pw in (("shop", "wrong password"), ("nobody", PASSWORD), ("gone", OTHER_PASSWORD),
                     ("shop", "sk_0123456789ab_" + "A" * 43)):
        with Conn(relay.port) as c:
            c.ehlo()
            r = c.auth_plain(user, pw)
            assert (r.code, r.enhanced) == (535, "5.7.8"), f"{user}: {r}"
            replies.append(r.lines)
            c.expect("MAIL FROM:<orders@shop.example>", 530, "5.7.0")
    assert all(l == replies[0] for l in replies), replies
    assert len(auth_events(relay, ok=False)) == before + 4


# ---- API keys as passwords ----

def test_api_key_as_password(relay):
    key = add_api_key(relay, "shop-api", "--allow-from", "noreply@shop.example")
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("apikey", key)  # any user name: the key names its credential
        assert_sends_as(relay, c, "shop-api", sender="noreply@shop.example")
        c.expect("MAIL FROM:<orders@shop.example>", 550, "5.7.1")
    ev = auth_events(relay)[-1]
    assert ev["credential"] == "shop-api" and ev["method"] == "api-key", ev
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as c:
        c.starttls(context=client_tls_context())
        c.login("shop-api", key)
    # the same key id with another secret is refused
    forged = key[:16] + ("B" if key[16] != "B" else "C") + key[17:]
    with Conn(relay.port) as c:
        c.ehlo()
        r = c.auth_plain("apikey", forged)
        assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)


# ---- SCRAM-SHA-256 (RFC 5802, RFC 7677), an independent client ----

def _hmac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(b):
    return base64.b64encode(b).decode()


class Scram:
    """The client side of one SCRAM-SHA-256 exchange."""

    def __init__(self, user, password):
        self.user = user.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode()
        self.cnonce = base64.b64encode(os.urandom(18)).decode().replace("=", "")
        self.first_bare = f"n={self.user},r={self.cnonce}"

    def first(self):
        return "n,," + self.first_bare

    def final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.cnonce) and len(attrs["r"]) > len(self.cnonce)
        self.salt = base64.b64decode(attrs["s"])
        self.iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, self.salt, self.iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={_b64(b'n,,')},r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(stored_key, self.auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_key = _hmac(salted, b"Server Key")
        return f"{without_proof},p={_b64(proof)}"

    def verify(self, server_final):
        assert server_final == "v=" + _b64(_hmac(self.server_key, self.auth_message)), \
            "server signature does not verify"


def tls_session(s):
    c = Conn(s.port)
    c.ehlo()
    c.starttls()
    return c


def scram_login(c, user, password):
    """Runs the exchange; returns (final reply, server-first attributes)."""
    sc = Scram(user, password)
    r = c.cmd("AUTH SCRAM-SHA-256 " + _b64(sc.first().encode()))
    assert r.code == 334, str(r)
    server_first = base64.b64decode(r.lines[0]).decode()
    r = c.cmd(_b64(sc.final(server_first).encode()))
    if r.code != 334:
        return r, server_first
    sc.verify(base64.b64decode(r.lines[0]).decode())
    return c.cmd(""), server_first


def test_scram_sha_256(relay):
    with tls_session(relay) as c:
        ext = c.ehlo().lines[1:]
        assert "AUTH PLAIN LOGIN SCRAM-SHA-256" in ext, ext
        r, server_first = scram_login(c, "shop", PASSWORD)
        assert (r.code, r.enhanced) == (235, "2.7.0"), str(r)
        assert ",i=4096" in server_first
        assert_sends_as(relay, c, "shop")
    ev = auth_events(relay)[-1]
    assert ev["credential"] == "shop" and ev["method"] == "SCRAM-SHA-256", ev


def test_scram_wrong_password_and_unknown_user(relay):
    firsts = []
    replies = []
    for user, pw in (("shop", "wrong password"), ("nobody", PASSWORD), ("nobody", PASSWORD)):
        with tls_session(relay) as c:
            c.ehlo()
            r, server_first = scram_login(c, user, pw)
            assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)
            replies.append(r.lines)
            firsts.append(dict(kv.split("=", 1) for kv in server_first.split(",")))
            c.expect("MAIL FROM:<orders@shop.example>", 530, "5.7.0")
    assert replies[0] == replies[1] == replies[2]
    # an unknown name gets a salt and iteration count like a real one, the
    # same each time, so asking twice reveals nothing
    assert firsts[1]["s"] == firsts[2]["s"] and firsts[1]["i"] == firsts[0]["i"] == "4096"
    assert len(base64.b64decode(firsts[1]["s"])) == len(base64.b64decode(firsts[0]["s"]))


def test_scram_cancel_and_garbage(relay):
    with tls_session(relay) as c:
        c.ehlo()
        c.expect("AUTH SCRAM-SHA-256", 334)
        c.expect("*", 501)
        c.expect("AUTH SCRAM-SHA-256 " + _b64(b"p=tls-unique,,n=shop,r=abc"), 535, "5.7.8")
        c.expect("AUTH SCRAM-SHA-256 !!notbase64", 501, "5.5.2")
        r, _ = scram_login(c, "shop", PASSWORD)
        assert r.code == 235, str(r)


# ---- client certificates ----

@pytest.fixture
def client_cert(tmp_path):
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=billing client"],
                   check=True, capture_output=True)
    return cert, key


def cert_ctx(cert, key):
    ctx = client_tls_context()
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_client_certificate_with_python_ssl(relay, client_cert):
    cert, key = client_cert
    relay.cli("creds", "add", "--init", "billing", "--cert", str(cert), "--allow-from", "*@billing.example")
    # STARTTLS on the submission port
    with Conn(relay.port) as c:
        c.ehlo()
        c.expect("STARTTLS", 220)
        c.sock = cert_ctx(cert, key).wrap_socket(c.sock, server_hostname="relay.test")
        ext = c.ehlo().lines[1:]
        assert not any(l.startswith("AUTH") for l in ext), ext  # already known
        assert_sends_as(relay, c, "billing", sender="invoices@billing.example")
        c.expect("AUTH PLAIN " + _b64(b"\0shop\0" + PASSWORD.encode()), 503, "5.5.1")
    # implicit TLS
    with socket.create_connection(("127.0.0.1", relay.tls_port), timeout=5) as raw:
        c = Conn.__new__(Conn)
        c.sock = cert_ctx(cert, key).wrap_socket(raw, server_hostname="relay.test")
        c.buf = b""
        assert c.reply().code == 220
        c.ehlo()
        assert_sends_as(relay, c, "billing", sender="invoices@billing.example")
    ev = auth_events(relay)[-1]
    assert ev["credential"] == "billing" and ev["method"] == "client-cert", ev
    # without a certificate the same connection needs AUTH
    with tls_session(relay) as c:
        c.ehlo()
        c.expect("MAIL FROM:<invoices@billing.example>", 530, "5.7.0")


def s_client(args, lines):
    """openssl s_client playing lines one reply at a time; returns stdout."""
    p = subprocess.Popen(["openssl", "s_client", "-quiet", "-ign_eof", *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    deadline = time.monotonic() + 15

    def replies(n):
        nonlocal out
        while len(re.findall(rb"(?m)^\d{3} ", out)) < n and time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(p.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                return
            out += chunk

    try:
        if "-starttls" not in args:
            replies(1)  # the greeting (with -starttls s_client reads it itself)
        seen = len(re.findall(rb"(?m)^\d{3} ", out))
        for line in lines:
            p.stdin.write(line)
            p.stdin.flush()
            seen += 1
            replies(seen)
        p.stdin.close()
        replies(1 << 30)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out.decode(errors="replace")


def test_client_certificate_with_openssl_s_client(relay, client_cert, tmp_path):
    cert, key = client_cert
    relay.cli("creds", "add", "--init", "billing", "--cert", str(cert))
    dialogue = [b"EHLO client.test\r\n", b"MAIL FROM:<x@billing.example>\r\n", b"QUIT\r\n"]
    out = s_client(["-connect", f"127.0.0.1:{relay.port}", "-starttls", "smtp", "-cert",
                    str(cert), "-key", str(key)], dialogue)
    assert "250 2.1.0" in out, out
    out = s_client(["-connect", f"127.0.0.1:{relay.tls_port}", "-cert", str(cert), "-key",
                    str(key)], dialogue)
    assert "250 2.1.0" in out, out
    # another certificate is not that credential
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(other / "k"), "-out",
                    str(other / "c"), "-days", "2", "-subj", "/CN=billing client"],
                   check=True, capture_output=True)
    out = s_client(["-connect", f"127.0.0.1:{relay.tls_port}", "-cert", str(other / "c"), "-key",
                    str(other / "k")], dialogue)
    assert "530 5.7.0" in out and "250 2.1.0" not in out, out
    # revoked: the certificate no longer logs in
    relay.cli("creds", "revoke", "billing")
    out = s_client(["-connect", f"127.0.0.1:{relay.tls_port}", "-cert", str(cert), "-key",
                    str(key)], dialogue)
    assert "530 5.7.0" in out, out
    assert any(e.get("method") == "client-cert" for e in auth_events(relay, ok=False))


# ---- failed AUTH per address: slower, then blocked ----

def timed_failure(port):
    with Conn(port) as c:
        c.ehlo()
        t = time.monotonic()
        r = c.auth_plain("shop", "wrong password")
        return r, time.monotonic() - t


def test_failures_slow_down_then_block(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
                         "SLUICE_AUTH_FAILURES_BEFORE_DELAY": "2",
                         "SLUICE_AUTH_FAILURES_BEFORE_BLOCK": "4",
                         "SLUICE_AUTH_BLOCK_TIME": "3s"})
    add_password(s, "shop")
    s.start()
    fast = [timed_failure(s.port) for _ in range(2)]
    for r, _ in fast:
        assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)
    # the third failure waits 500 ms on a timer before its answer, while
    # the relay keeps serving others
    with Conn(s.port) as a:
        a.ehlo()
        t = time.monotonic()
        a.send(b"AUTH PLAIN " + base64.b64encode(b"\0shop\0wrong password") + b"\r\n")
        with Conn(s.port) as b:
            b.ehlo()
            other = time.monotonic() - t
        r = a.reply()
        slow = time.monotonic() - t
    assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)
    # the same argon2id work as the fast ones (which varies with the load),
    # plus the 500 ms timer
    assert slow >= 0.5 and slow - min(t for _, t in fast) >= 0.3, (fast, slow)
    assert other < 0.4, other
    # the fourth blocks the address: 421 and the connection closes
    with Conn(s.port) as c:
        c.ehlo()
        r = c.auth_plain("shop", "wrong password")
        assert (r.code, r.enhanced) == (421, "4.7.0"), str(r)
        assert re.search(r"from 127\.0\.0\.1; try again in [1-4] s", r.text), str(r)
        assert c.closed()
    # while blocked even the right password is refused at once
    with Conn(s.port) as c:
        c.ehlo()
        t = time.monotonic()
        r = c.auth_plain("shop", PASSWORD)
        assert r.code == 421 and time.monotonic() - t < 0.3, str(r)
    assert s.events("security.auth_blocked")
    # the block ends by itself
    def logged_in():
        with Conn(s.port) as c:
            c.ehlo()
            return c.auth_plain("shop", PASSWORD).code == 235
    wait_for(logged_in, timeout=8, what="block to end")


# ---- revocation and live changes ----

def test_revoked_credential_fails_and_ends_open_sessions(relay):
    with Conn(relay.port) as open_session:
        open_session.ehlo()
        open_session.login("shop", PASSWORD)
        open_session.expect("MAIL FROM:<orders@shop.example>", 250)
        open_session.expect("RSET", 250)
        relay.cli("creds", "revoke", "shop")
        # a session already logged in is refused at its next MAIL
        open_session.expect("MAIL FROM:<orders@shop.example>", 530, "5.7.0")
    with Conn(relay.port) as c:
        c.ehlo()
        r = c.auth_plain("shop", PASSWORD)
        assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)
    with tls_session(relay) as c:
        c.ehlo()
        r, _ = scram_login(c, "shop", PASSWORD)
        assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)


def test_changes_take_effect_without_restart(relay):
    pid = relay.proc.pid
    # a credential added now works now
    add_password(relay, "newapp", "--allow-from", "*@new.example", password=OTHER_PASSWORD)
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("newapp", OTHER_PASSWORD)
        assert_sends_as(relay, c, "newapp", sender="a@new.example")
    # a rotated password: the old one fails, the new one works
    relay.cli("creds", "rotate", "newapp", input="rotated password 123\n")
    with Conn(relay.port) as c:
        c.ehlo()
        assert c.auth_plain("newapp", OTHER_PASSWORD).code == 535
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("newapp", "rotated password 123")
    with tls_session(relay) as c:
        c.ehlo()
        r, _ = scram_login(c, "newapp", "rotated password 123")
        assert r.code == 235, str(r)
    # deleted: an open session is logged out at its next MAIL
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("newapp", "rotated password 123")
        relay.cli("creds", "delete", "newapp")
        c.expect("MAIL FROM:<a@new.example>", 530, "5.7.0")
    # made again with other rules: they apply
    add_password(relay, "newapp", "--allow-from", "*@other.example", password=OTHER_PASSWORD)
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("newapp", OTHER_PASSWORD)
        c.expect("MAIL FROM:<a@new.example>", 550, "5.7.1")
        c.expect("MAIL FROM:<a@other.example>", 250)
    assert relay.proc.pid == pid and relay.proc.poll() is None


def test_users_file_still_logs_in(relay):
    """A users file left from before `creds import` keeps working."""
    legacy_users_file(relay.var / "users", {"legacy": PASSWORD})
    relay.hup()
    wait_for(lambda: relay.events("server.reloaded"), what="reload")
    msgid = new_msgid()
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("legacy", PASSWORD)
        r = c.send_message(message(msgid))
        assert r.code == 250, str(r)
    assert wait_captured_id(relay, msgid)["envelope"]["meta"]["auth"] == "legacy"
    # a store credential of the same name wins over the file
    add_password(relay, "legacy", password=OTHER_PASSWORD)
    with Conn(relay.port) as c:
        c.ehlo()
        assert c.auth_plain("legacy", PASSWORD).code == 535
