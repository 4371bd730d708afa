"""Resource limits of the submission server: message size (RFC 1870),
recipients, command line length, bare LF in commands, timeouts, connection
caps and the bad-command cap, all set small through SLUICE_LIMITS_* variables."""
import socket
import time

import pytest

from conftest import RELAY_NET_SOURCE, Sluice, wait_for
from support_smtp import (CaptureWatch, Conn, dot_stuff, message, new_msgid, open_session,
                          wait_captured_id)
from test_observability import scrape

LIMIT = 10 * 1024


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    s = Sluice(tmp_path_factory.mktemp("limited"), env={
        "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32",
        "SLUICE_LIMITS_MAX_MESSAGE_SIZE": "10K",
        "SLUICE_LIMITS_MAX_RECIPIENTS": "3",
        "SLUICE_LIMITS_MAX_LINE_LENGTH": "512",
    })
    s.start()
    yield s
    s.stop()


def sized_message(msgid, total):
    """A message of exactly total octets (as sent, before dot-stuffing)."""
    head = message(msgid, body=b"")
    need = total - len(head)
    body = b""
    while need > 0:
        n = min(80, need)
        if need - n == 1:
            n -= 1  # never leave a single octet: every line ends in CRLF
        body += b"y" * (n - 2) + b"\r\n"
        need -= n
    data = head + body
    assert len(data) == total
    return data


def session(s):
    c = open_session(s, auth=False)
    return c


def test_size_parameter_over_limit(limited):
    with session(limited) as c:
        c.expect(f"MAIL FROM:<app@sender.test> SIZE={LIMIT + 1}", 552, "5.3.4")
        c.expect("RCPT TO:<rcpt@example.net>", 503, "5.5.1")
        c.expect(f"MAIL FROM:<app@sender.test> SIZE={LIMIT}", 250, "2.1.0")


def test_message_at_limit_is_accepted(limited):
    msgid = new_msgid()
    with session(limited) as c:
        r = c.send_message(sized_message(msgid, LIMIT))
        assert r.code == 250, str(r)
    wait_captured_id(limited, msgid)


def test_oversized_data_is_refused(limited):
    watch = CaptureWatch(limited)
    with session(limited) as c:
        for size in (LIMIT + 1, 3 * LIMIT):
            r = c.send_message(sized_message(new_msgid(), size))
            assert (r.code, r.enhanced) == (552, "5.3.4"), str(r)
            c.expect("NOOP", 250, "2.0.0")
    watch.assert_only([])


def bdat(c, chunk, last=False):
    c.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
    return c.reply()


def test_oversized_bdat_is_refused(limited):
    watch = CaptureWatch(limited)
    with session(limited) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        r = bdat(c, sized_message(new_msgid(), LIMIT + 100), last=True)
        assert (r.code, r.enhanced) == (552, "5.3.4"), str(r)
        c.expect("NOOP", 250)

        # over the limit only across chunks: refused at the latest on LAST
        data = sized_message(new_msgid(), 2 * LIMIT)
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        r = bdat(c, data[:LIMIT - 100])
        assert r.code == 250, str(r)
        r = bdat(c, data[LIMIT - 100:LIMIT + 100])
        if r.code == 250:
            r = bdat(c, data[LIMIT + 100:], last=True)
        assert (r.code, r.enhanced) == (552, "5.3.4"), str(r)
        c.expect("RSET", 250)
        c.expect("NOOP", 250)
    watch.assert_only([])


def test_fourth_recipient_is_refused(limited):
    msgid = new_msgid()
    with session(limited) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        for i in range(3):
            c.expect(f"RCPT TO:<r{i}@example.net>", 250, "2.1.5")
        c.expect("RCPT TO:<r3@example.net>", 452, "4.5.3")
        c.expect("RCPT TO:<r4@example.net>", 452, "4.5.3")
        c.expect("DATA", 354)
        c.send(dot_stuff(message(msgid)) + b".\r\n")
        assert c.reply().code == 250
    m = wait_captured_id(limited, msgid)
    assert m["envelope"]["rcpt_to"] == ["r0@example.net", "r1@example.net", "r2@example.net"]


def line_too_long_count(s):
    return scrape(s).get('sluice_messages_rejected_total{reason="line_too_long"}', 0)


def test_command_line_length(limited):
    before = line_too_long_count(limited)
    with session(limited) as c:
        # 512 octets with the CRLF is the limit (RFC 5321 4.5.3.1.4)
        c.expect("NOOP " + "x" * (512 - 7), 250, "2.0.0")
        c.expect("NOOP " + "x" * (512 - 6), 500, "5.5.6")
        c.expect("NOOP", 250, "2.0.0")
        # far over the limit, arriving in many reads: one reply, then on
        c.send(b"MAIL FROM:<" + b"a" * 200000)
        c.send(b"@x.test>\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.6"), str(r)
        c.expect("RCPT TO:<rcpt@example.net>", 503, "5.5.1")  # the MAIL never ran
        c.expect("NOOP", 250, "2.0.0")
    assert line_too_long_count(limited) == before + 2


def test_overlong_line_is_answered_before_its_end_arrives(limited):
    before = line_too_long_count(limited)
    with session(limited) as c:
        # no LF yet: the reply comes as soon as the limit is passed
        c.send(b"NOOP " + b"x" * 600)
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.6"), str(r)
        assert "limit 512 octets" in r.text, str(r)
        # the rest of that line is dropped without another reply
        c.send(b"y" * 3000)
        c.send(b"z\r\nNOOP\r\n")
        r = c.reply()  # the NOOP sent behind the tail
        assert (r.code, r.enhanced) == (250, "2.0.0"), str(r)
    assert line_too_long_count(limited) == before + 1


def test_command_with_bare_lf(limited):
    with session(limited) as c:
        c.send(b"NOOP\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.2"), str(r)
        # a bare LF must not split one line into two commands either
        c.send(b"MAIL FROM:<app@sender.test>\nRCPT TO:<x@example.net>\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.2"), str(r)
        r = c.reply()
        assert (r.code, r.enhanced) == (503, "5.5.1"), str(r)
        c.expect("NOOP", 250, "2.0.0")


# ---- timeouts ----

def test_command_timeout(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_COMMAND_TIMEOUT": "1s"}).start()
    with Conn(s.port) as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply()  # waits for the server's own event
        elapsed = time.monotonic() - t0
        assert (r.code, r.enhanced) == (421, "4.4.2"), str(r)
        assert 0.8 <= elapsed < 4, elapsed
        assert c.closed()
    assert s.events("smtp.timeout")


def test_data_timeout(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_COMMAND_TIMEOUT": "30s",
                         "SLUICE_LIMITS_DATA_TIMEOUT": "1s",
                         "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32"}).start()
    watch = CaptureWatch(s)
    with open_session(s, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect("DATA", 354)
        c.send(message(new_msgid())[:40])  # then stall mid-message
        t0 = time.monotonic()
        r = c.reply()
        elapsed = time.monotonic() - t0
        assert (r.code, r.enhanced) == (421, "4.4.2"), str(r)
        assert 0.8 <= elapsed < 4, elapsed
        assert c.closed()
    watch.assert_only([])


# ---- connection caps ----

def connect(port, source):
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def first_line(sock):
    buf = b""
    while not buf.endswith(b"\r\n"):
        d = sock.recv(4096)
        if not d:
            break
        buf += d
    return buf


def test_connection_caps(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_MAX_CONNECTIONS": "3",
                         "SLUICE_LIMITS_MAX_CONNECTIONS_PER_IP": "2"}).start()
    held = []
    try:
        for src in ("127.0.0.1", "127.0.0.1"):
            c = Conn(s.port, source=src)
            assert c.greeting.code == 220
            held.append(c)
        # a third from the same address: per-address cap
        extra = connect(s.port, "127.0.0.1")
        assert first_line(extra).startswith(b"421 4.7.0 ")
        assert extra.recv(100) == b""
        extra.close()
        # another address still gets in, up to the total cap
        c = Conn(s.port, source="127.0.0.3")
        assert c.greeting.code == 220
        held.append(c)
        extra = connect(s.port, "127.0.0.4")
        assert first_line(extra).startswith(b"421 4.7.0 ")
        extra.close()
        # the refusal is logged just after its 421 is written: poll
        wait_for(lambda: len(s.events("connection.refused")) == 2, 5, "two refusals logged")
        reasons = [e.get("reason") for e in s.events("connection.refused")]
        assert reasons == ["max_connections_per_ip", "max_connections"], reasons
        # the sessions still held keep working
        held[0].expect("NOOP", 250)
        # a slot freed by QUIT is usable again
        held[0].expect("QUIT", 221)
        held[0].closed()

        def try_again():
            c = Conn(s.port, source="127.0.0.1", greet=False)
            r = c.reply()
            if r.code == 220:
                held.append(c)
                return True
            c.close()
            return False
        wait_for(try_again, 5, "a freed connection slot")
    finally:
        for c in held:
            c.close()
