"""SMTP submission protocol, command by command: EHLO extensions, the minor
commands, sequencing, AUTH and the no-open-relay rule (RFC 5321, 4954, 6409)."""
import base64
import os

import pytest

from conftest import PASSWORD
from support_smtp import (CaptureWatch, Conn, extensions, message, new_msgid, open_session,
                          wait_captured_id)

@pytest.fixture
def relay(shared_sluice):
    return shared_sluice


DEFAULT_SIZE = 25 * 1024 * 1024
BASE_EXTENSIONS = ["PIPELINING", f"SIZE {DEFAULT_SIZE}", "8BITMIME", "SMTPUTF8",
                   "ENHANCEDSTATUSCODES", "CHUNKING"]


def ehlo_exts(c):
    r = c.ehlo()
    assert r.lines[0].startswith("relay.test"), str(r)
    return sorted(extensions(r))


def test_ehlo_extensions_plaintext_loopback(relay):
    with Conn(relay.port) as c:
        assert c.greeting.code == 220 and c.greeting.lines[0].startswith("relay.test ")
        assert ehlo_exts(c) == sorted(BASE_EXTENSIONS + ["STARTTLS", "AUTH PLAIN LOGIN SCRAM-SHA-256"])


def test_ehlo_extensions_after_starttls(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        c.starttls()
        assert c.tls_version in ("TLSv1.2", "TLSv1.3")
        assert ehlo_exts(c) == sorted(BASE_EXTENSIONS + ["AUTH PLAIN LOGIN SCRAM-SHA-256"])


def test_ehlo_extensions_on_smtps_port(relay):
    with Conn(relay.tls_port, implicit_tls=True) as c:
        assert c.greeting.code == 220
        assert ehlo_exts(c) == sorted(BASE_EXTENSIONS + ["AUTH PLAIN LOGIN SCRAM-SHA-256"])
        c.expect("STARTTLS", 503, "5.5.1")


def test_size_extension_follows_config(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_MAX_MESSAGE_SIZE": "10K"}).start()
    with Conn(s.port) as c:
        assert "SIZE 10240" in ehlo_exts(c)


def test_auth_needs_tls_when_plaintext_loopback_disallowed(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "false"})
    s.add_user("app")
    s.start()
    with Conn(s.port) as c:
        exts = ehlo_exts(c)
        assert exts == sorted(BASE_EXTENSIONS + ["STARTTLS"])
        assert not any(e.startswith("AUTH") for e in exts)
        r = c.auth_plain()
        assert (r.code, r.enhanced) == (538, "5.7.11"), str(r)
        c.expect("MAIL FROM:<app@sender.test>", 530, "5.7.0")
        c.starttls()
        assert "AUTH PLAIN LOGIN SCRAM-SHA-256" in ehlo_exts(c)
        c.login()
        msgid = new_msgid()
        r = c.send_message(message(msgid))
        assert r.code == 250 and r.enhanced == "2.0.0", str(r)
    wait_captured_id(s, msgid)


def test_helo_works(relay):
    msgid = new_msgid()
    with Conn(relay.port) as c:
        r = c.expect("HELO client.test", 250)
        assert r.lines == ["relay.test"], str(r)
        c.login()
        r = c.send_message(message(msgid))
        assert r.code == 250, str(r)
        c.expect("QUIT", 221, "2.0.0")
    m = wait_captured_id(relay, msgid)
    assert m["data"].startswith(b"Received: from client.test ([127.0.0.1])")


def test_helo_and_ehlo_need_argument(relay):
    with Conn(relay.port) as c:
        c.expect("EHLO", 501, "5.5.4")
        c.expect("HELO", 501, "5.5.4")
        c.expect("MAIL FROM:<a@b.test>", 503, "5.5.1")


def test_minor_commands(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        r = c.expect("VRFY app", 252, "2.5.0")
        r = c.expect("HELP", 214, "2.0.0")
        assert "EHLO" in r.text and "MAIL" in r.text
        c.expect("NOOP", 250, "2.0.0")
        c.expect("RSET", 250, "2.0.0")
        c.expect("EXPN staff", 502, "5.5.1")
        c.expect("FROBNICATE now", 500, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")  # still usable after an error
        r = c.expect("QUIT", 221, "2.0.0")
        assert "relay.test" in r.text
        assert c.closed()


def test_commands_before_ehlo(relay):
    with Conn(relay.port) as c:
        c.expect("NOOP", 250, "2.0.0")
        c.expect("VRFY x", 252, "2.5.0")
        c.expect("RSET", 250, "2.0.0")
        c.expect("MAIL FROM:<a@b.test>", 503, "5.5.1")
        c.expect("AUTH PLAIN", 503, "5.5.1")
        c.expect("RCPT TO:<a@b.test>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
        c.ehlo()
        c.login()


@pytest.mark.parametrize("steps", [
    ["RCPT TO:<r@example.net>"],
    ["DATA"],
    ["MAIL FROM:<app@sender.test>", "DATA"],
    ["MAIL FROM:<app@sender.test>", "MAIL FROM:<app@sender.test>"],
    ["MAIL FROM:<app@sender.test>", "AUTH PLAIN AGFwcABw"],
    ["MAIL FROM:<app@sender.test>", "RCPT TO:<r@example.net>", "MAIL FROM:<x@sender.test>"],
    ["MAIL FROM:<app@sender.test>", "RCPT TO:<r@example.net>", "STARTTLS"],
], ids=["rcpt-first", "data-first", "data-no-rcpt", "mail-twice", "auth-in-tx", "mail-in-rcpt",
        "starttls-in-tx"])
def test_out_of_sequence(relay, steps):
    with open_session(relay, auth=False) as c:
        for s in steps[:-1]:
            r = c.cmd(s)
            assert r.code == 250, f"{s}: {r}"
        c.expect(steps[-1], 503, "5.5.1")
        c.expect("RSET", 250, "2.0.0")
        msgid = new_msgid()
        r = c.send_message(message(msgid))
        assert r.code == 250, str(r)
    wait_captured_id(relay, msgid)


def test_auth_twice_is_refused(relay):
    with open_session(relay) as c:
        r = c.auth_plain()
        assert (r.code, r.enhanced) == (503, "5.5.1"), str(r)


def test_auth_login_exchange(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        r = c.expect("AUTH LOGIN", 334)
        assert base64.b64decode(r.lines[0]) == b"Username:"
        r = c.expect(base64.b64encode(b"app").decode(), 334)
        assert base64.b64decode(r.lines[0]) == b"Password:"
        c.expect(base64.b64encode(PASSWORD.encode()).decode(), 235, "2.7.0")


def test_auth_plain_without_initial_response(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        r = c.expect("AUTH PLAIN", 334)
        assert r.lines == [""], str(r)
        c.expect(base64.b64encode(f"\0app\0{PASSWORD}".encode()).decode(), 235, "2.7.0")


def test_auth_cancel_and_unknown_mechanism(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        c.expect("AUTH LOGIN", 334)
        c.expect("*", 501)
        c.expect("AUTH CRAM-MD5", 504, "5.5.4")
        c.expect("MAIL FROM:<app@sender.test>", 530, "5.7.0")
        c.login()


def test_unauthenticated_mail_is_refused(relay):
    watch = CaptureWatch(relay)
    with Conn(relay.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<app@sender.test>", 530, "5.7.0")
        c.expect("RCPT TO:<victim@example.net>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
    assert watch.sluice.events("policy.rejected")
    watch.assert_only([])


def test_unauthenticated_mail_refused_after_starttls_too(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.expect("MAIL FROM:<app@sender.test>", 530, "5.7.0")


def test_relay_networks_allow_mail_without_auth(make_sluice):
    s = make_sluice(env={"SLUICE_SERVER_RELAY_NETWORKS": "127.0.0.1/32"}).start()
    msgid = new_msgid()
    with Conn(s.port) as c:
        c.ehlo()
        r = c.send_message(message(msgid))
        assert r.code == 250 and r.enhanced == "2.0.0", str(r)
    m = wait_captured_id(s, msgid)
    assert m["envelope"]["rcpt_to"] == ["rcpt@example.net"]
    assert b"authenticated as" not in m["data"]


def test_wrong_password_and_unknown_user_get_the_same_reply(relay):
    replies = []
    failures_before = len(relay.events("auth.failure"))
    with Conn(relay.port) as c:
        c.ehlo()
        for user, pw in (("app", "wrong"), ("nobody", PASSWORD), ("nobody", "wrong")):
            r = c.auth_plain(user, pw)
            assert (r.code, r.enhanced) == (535, "5.7.8"), str(r)
            replies.append(r.lines)
        c.expect("MAIL FROM:<app@sender.test>", 530, "5.7.0")
    with Conn(relay.port) as c:
        c.ehlo()
        c.expect("AUTH LOGIN", 334)
        c.expect(base64.b64encode(b"nobody").decode(), 334)
        r = c.expect(base64.b64encode(b"x").decode(), 535, "5.7.8")
        replies.append(r.lines)
    assert all(l == replies[0] for l in replies), replies
    assert len(relay.events("auth.failure")) == failures_before + 4


def test_too_many_bad_commands_close_the_connection(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_MAX_BAD_COMMANDS": "3"}).start()
    with Conn(s.port) as c:
        c.ehlo()
        c.expect("BOGUS 1", 500, "5.5.2")
        c.expect("BOGUS 2", 500, "5.5.2")
        # the error that reaches the cap gets one reply: the 421 alone
        c.expect("BOGUS 3", 421, "4.7.0")
        assert c.closed()
    assert s.events("smtp.too_many_errors")


# ---- AUTH line lengths (RFC 4954 4) ----

def plain_token(authzid, user, password):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


@pytest.fixture
def auth_relay(make_sluice):
    return make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"}).start()


def test_auth_initial_response_may_pass_512_octets(auth_relay):
    # three fields of 256 octets make an AUTH line of about 1,040 octets
    user = "u" * 256
    line = "AUTH PLAIN " + plain_token(user, user, "p" * 256)
    assert 512 < len(line) + 2 <= 12288
    with Conn(auth_relay.port) as c:
        c.ehlo()
        c.expect(line, 535, "5.7.8")  # read and checked, not cut off as too long
        c.expect("NOOP", 250, "2.0.0")
        # past 12288 octets it is too long, like a continuation line
        c.expect("AUTH PLAIN " + "A" * 12288, 500, "5.5.6")
        c.expect("NOOP", 250, "2.0.0")


def test_overlong_sasl_line_ends_the_exchange(auth_relay):
    with Conn(auth_relay.port) as c:
        c.ehlo()
        c.expect("AUTH PLAIN", 334)
        c.expect("A" * 13000, 500, "5.5.6")
        # back in the command state: this is a command, not SASL data
        c.expect("NOOP", 250, "2.0.0")
        c.expect("AUTH LOGIN", 334)
        c.send(b"B" * 20000)  # no LF yet: answered at once, exchange over
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.6"), str(r)
        c.send(b"BBBB\r\n")  # the rest of that line is dropped
        c.expect("NOOP", 250, "2.0.0")


# ---- secrets hygiene ----

def process_memory_holds(pid, needles):
    """Which of needles occur anywhere in the writable memory of process pid
    (heap, stacks, anonymous maps), read through /proc/PID/mem."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start > 1 << 30:
                continue  # a sanitizer's shadow memory, not the heap
            overlap = max(len(n) for n in needles)
            pos, tail = start, b""
            while pos < end:
                try:
                    mem.seek(pos)
                    data = mem.read(min(end - pos, 16 << 20))
                except (OSError, ValueError, OverflowError):
                    break
                if not data:
                    break
                chunk = tail + data
                found.update(n for n in needles if n in chunk)
                pos += len(data)
                tail = chunk[-overlap:]
    return found


def test_auth_secrets_are_wiped_after_use(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    password = "wipe-me-" + new_msgid()
    s.add_user("app", password)
    s.start()
    if not os.access(f"/proc/{s.proc.pid}/mem", os.R_OK):
        pytest.skip("cannot read the daemon's memory here")
    token = plain_token("", "app", password)
    login_pw = "login-" + new_msgid()
    wrong_pw = "wrong-" + new_msgid()
    wrong_token = plain_token("", "app", wrong_pw)
    with Conn(s.port) as c, Conn(s.port) as c2, Conn(s.port) as c3, Conn(s.port) as c4:
        c.ehlo()
        c.expect("AUTH PLAIN " + token, 235, "2.7.0")
        c.expect("NOOP", 250)
        c2.ehlo()
        c2.expect("AUTH LOGIN", 334)
        c2.expect(base64.b64encode(b"app").decode(), 334)
        c2.expect(base64.b64encode(login_pw.encode()).decode(), 535, "5.7.8")
        c2.expect("NOOP", 250)
        # the other outcome of each: PLAIN refused (answer on its own line),
        # LOGIN accepted
        c3.ehlo()
        c3.expect("AUTH PLAIN", 334)
        c3.expect(wrong_token, 535, "5.7.8")
        c3.expect("NOOP", 250)
        c4.ehlo()
        c4.expect("AUTH LOGIN " + base64.b64encode(b"app").decode(), 334)
        c4.expect(base64.b64encode(password.encode()).decode(), 235, "2.7.0")
        c4.expect("NOOP", 250)
        needles = [token.encode(), password.encode(), login_pw.encode(),
                   base64.b64encode(login_pw.encode()), wrong_token.encode(), wrong_pw.encode(),
                   base64.b64encode(password.encode())]
        left = process_memory_holds(s.proc.pid, needles)
        assert not left, f"secrets still in the daemon's memory: {left}"
