"""What a client sends never puts a bare CR or LF on the upstream's wire.

A real upstream (tests/support/upstream.py) records every octet Sluice sent
it, before any parsing; the client throws every kind of line break and
control octet it can at each place a client chooses text: EHLO/HELO, MAIL and
RCPT addresses and parameters, the AUTH identity, DATA and BDAT content. What
is accepted is relayed (and one recipient bounces, so a DSN carrying the
original header block goes out too); then the raw bytes are checked."""
import base64
import re

from conftest import PASSWORD, wait_for
from support_smtp import Conn, message, new_msgid
from test_delivery import upstream_section

BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

# EHLO/HELO arguments that RFC 5321 4.1.1.1 does not allow (Domain or
# address-literal only); each is refused.
BAD_HELO = [
    b"x\r.\rQUIT\tnow",
    b"x\r",
    b"x\rRCPT TO:<evil@example.net>",
    b"a\x00b",
    b"a\x1bb.test",
    b"a\tb",
    b"a b",
    b"a_b.test",
    b"a.test.",
    b"[1.2.3.4",
    b"\xc3\xa9.test",
]


def config(up_port):
    return "[queue]\nretry_base = 1s\nretry_cap = 2s\n" + upstream_section("main", up_port)


def bare_line_ends(data):
    return [data[max(0, m.start() - 30):m.end() + 30] for m in BARE.finditer(data)]


def test_no_client_input_puts_a_bare_cr_or_lf_on_the_upstream_wire(make_sluice, make_upstream,
                                                                     tmp_path):
    wire = tmp_path / "wire"
    up = make_upstream("--wire", str(wire),
                       "--rcpt-reply", "bounce@dest.test=550 5.1.1 no\r.\rsuch\x01user")
    s = make_sluice(config_text=config(up.port),
                    env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
                         "SLUICE_LIMITS_MAX_BAD_COMMANDS": "100"})
    s.add_user("app")
    s.start()
    sent = []
    with Conn(s.port) as c:
        for verb in (b"EHLO", b"HELO"):
            for arg in BAD_HELO:
                c.send(verb + b" " + arg + b"\r\n")
                r = c.reply()
                # NUL makes the line no command at all (500 5.5.2)
                want = (500, "5.5.2") if b"\0" in arg else (501, "5.5.4")
                assert (r.code, r.enhanced) == want, f"{verb} {arg!r}: {r}"
        c.expect("EHLO client.test", 250)

        # an identity with line breaks never logs in
        for ident in (b"app\r\nX", b"app\r", b"\r\n.\r\n"):
            tok = base64.b64encode(b"\0" + ident + b"\0" + PASSWORD.encode())
            r = c.cmd(b"AUTH PLAIN " + tok)
            assert r.code in (501, 535), f"{ident!r}: {r}"
        c.login()

        # addresses and parameters with control octets are refused
        for line in (b"MAIL FROM:<a\r@sender.test>", b"MAIL FROM:<a@sender.test> ENVID=x\r.\r",
                     b"MAIL FROM:<a@sender.test> ENVID=x\x01", b"MAIL FROM:<\"a\r\"@sender.test>"):
            c.send(line + b"\r\n")
            assert c.reply().code in (501, 555), line

        # content with bare CR or LF is refused, by DATA and by BDAT
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<ok@dest.test>", 250)
        c.expect("DATA", 354)
        c.send(message(new_msgid(), body=b"a\rb\r\n.\r.\rQUIT\r\n") + b".\r\n")
        assert c.reply().code == 550
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<ok@dest.test>", 250)
        chunk = message(new_msgid(), body=b"x\ny\r\n.\n")
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        assert c.reply().code == 550

        # accepted: xtext that encodes CR LF stays encoded; one recipient
        # bounces, so the DSN (with the original header block) is sent too
        mid = new_msgid()
        c.expect("MAIL FROM:<app@sender.test> ENVID=a+0D+0A.+0D+0Ab", 250)
        c.expect("RCPT TO:<ok@dest.test> ORCPT=rfc822;x+0D+0A@dest.test", 250)
        c.expect("RCPT TO:<bounce@dest.test>", 250)
        c.expect("DATA", 354)
        c.send(message(mid, subject="wire") + b".\r\n")
        assert c.reply().code == 250
        sent.append(mid)
        mid = new_msgid()
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<ok@dest.test>", 250)
        chunk = message(mid, subject="bdat")
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        assert c.reply().code == 250
        sent.append(mid)
        c.expect("QUIT", 221)

    # both messages to ok@, and the DSN to the sender
    msgs = wait_for(lambda: len(up.messages()) >= 3 and up.messages(), 30, "2 messages and a DSN")
    dsn = [m for m in msgs if b"multipart/report" in m["data"]]
    assert dsn, [m["data"][:200] for m in msgs]
    assert b"text/rfc822-headers" in dsn[0]["data"]
    assert b"no?.?such?user" in dsn[0]["data"]  # the upstream's reply, escaped

    raw = b"".join(p.read_bytes() for p in sorted(wire.glob("conn-*.raw")))
    assert b"Received: from client.test" in raw and all(m.encode() in raw for m in sent)
    assert not bare_line_ends(raw), bare_line_ends(raw)
    assert b"QUIT\tnow" not in raw and b"\x01" not in raw
