"""Message content over SMTP: the end-of-data rules and the smuggling defence
(RFC 5321 2.3.8, 4.1.1.4, 4.5.2), dot transparency, 8-bit bodies, BDAT
(RFC 3030) and pipelining (RFC 2920)."""
import base64
import re

import pytest

from conftest import PASSWORD, RELAY_NET_SOURCE
from support_smtp import (CaptureWatch, Conn, body_of, captured_with, count_captured,
                          dot_stuff, header_block, message, new_msgid, open_session,
                          wait_captured_id)


@pytest.fixture
def relay(shared_sluice):
    return shared_sluice


# Every spelling of "end of data" that some MTA has accepted besides
# <CRLF>.<CRLF>; each must be kept as content and then refused.
SMUGGLING_VARIANTS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
                      b"\n.\r\r\n", b".\r\r\n"]


def smuggled_payload(smuggled_id):
    return (b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n"
            b"From: evil@x.test\r\nTo: victim@y.test\r\nSubject: smuggled\r\n"
            + f"Message-ID: <{smuggled_id}>\r\n".encode() + b"\r\nsmuggled body\r\n")


@pytest.mark.parametrize("variant", SMUGGLING_VARIANTS, ids=lambda v: repr(v)[2:-1])
def test_smuggling_variant_is_refused_and_session_continues(relay, variant):
    watch = CaptureWatch(relay)
    msgid, smuggled_id, good_id = new_msgid(), new_msgid(), new_msgid()
    content = message(msgid, body=b"innocent text" + variant + smuggled_payload(smuggled_id))
    # the oracle for which bare line ending the reply must name
    name = "bare LF" if re.search(rb"(?<!\r)\n", content) else "bare CR"
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", content)
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250, "2.1.0")
        c.expect("RCPT TO:<rcpt@example.net>", 250, "2.1.5")
        c.expect("DATA", 354)
        c.send(content + b".\r\n")  # raw: no dot-stuffing, the variant goes as is
        r = c.reply()
        assert (r.code, r.enhanced) == (550, "5.5.2"), str(r)
        assert name in r.text, str(r)
        # the session goes on: the next reply answers our next command
        c.expect("NOOP", 250, "2.0.0")
        r = c.send_message(message(good_id, subject="after"))
        assert r.code == 250 and r.enhanced == "2.0.0", str(r)
        c.expect("QUIT", 221, "2.0.0")
        assert c.closed()
    wait_captured_id(relay, good_id)
    watch.assert_only([good_id])
    assert count_captured(relay, good_id) == 1
    assert not captured_with(relay, msgid) and not captured_with(relay, smuggled_id)
    assert not any(m["envelope"]["mail_from"] == "evil@x.test" for m in relay.captured())
    assert relay.events("security.bare_line_ending")


def test_dot_stuffing_is_undone_byte_for_byte(relay):
    msgid = new_msgid()
    body = (b".\r\n..\r\n.leading dot\r\n..two dots\r\n...three\r\n"
            b"middle . dot\r\n. space\r\n.\r\nlast\r\n")
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect("DATA", 354)
        wire = dot_stuff(message(msgid, body=body))
        assert b"\r\n...leading" not in wire and b"\r\n..leading dot" in wire
        c.send(wire + b".\r\n")
        r = c.reply()
        assert r.code == 250, str(r)
    m = wait_captured_id(relay, msgid)
    assert body_of(m["data"]) == body


def test_body_ending_without_final_crlf_is_not_extended(relay):
    # "text" + CRLF.CRLF: the CRLF before the dot belongs to the content
    msgid = new_msgid()
    with open_session(relay, auth=False) as c:
        r = c.send_message(message(msgid, body=b"no blank line at end"))
        assert r.code == 250, str(r)
    assert body_of(wait_captured_id(relay, msgid)["data"]) == b"no blank line at end\r\n"


def test_empty_data_is_refused(relay):
    watch = CaptureWatch(relay)
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect("DATA", 354)
        c.send(b".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (554, "5.6.0"), str(r)
        c.expect("NOOP", 250)
    watch.assert_only([])


def test_message_of_only_an_empty_line(relay):
    # content "\r\n": no header fields at all; the default policy requires
    # From, so the message is refused with the rule named and nothing is kept
    watch = CaptureWatch(relay)
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect("DATA", 354)
        c.send(b"\r\n.\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (550, "5.6.0") and "From" in r.text, str(r)
    assert watch.new_accepted() == []


def test_eight_bit_body_is_kept(relay):
    msgid = new_msgid()
    body = "Grüße aus Köln — 日本語\r\n".encode("utf-8") + b"latin-1 \xe9\xe8\r\n\xff\x80\r\n"
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test> BODY=8BITMIME", 250, "2.1.0")
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(message(msgid, body=body)) + b".\r\n")
        r = c.reply()
        assert r.code == 250, str(r)
    m = wait_captured_id(relay, msgid)
    assert body_of(m["data"]) == body


@pytest.mark.parametrize("body,enhanced", [
    (b"a" * 999 + b"\r\n", "5.6.0"),
    (b"nul \x00 inside\r\n", "5.6.0"),
], ids=["line-over-998", "nul-octet"])
def test_malformed_content_is_refused(relay, body, enhanced):
    watch = CaptureWatch(relay)
    msgid = new_msgid()
    with open_session(relay, auth=False) as c:
        r = c.send_message(message(msgid, body=body))
        assert (r.code, r.enhanced) == (554, enhanced), str(r)
        c.expect("NOOP", 250)
    watch.assert_only([])


def test_line_of_998_octets_is_accepted(relay):
    msgid = new_msgid()
    body = b"b" * 998 + b"\r\n"
    with open_session(relay, auth=False) as c:
        r = c.send_message(message(msgid, body=body))
        assert r.code == 250, str(r)
    assert body_of(wait_captured_id(relay, msgid)["data"]) == body


# ---- BDAT (RFC 3030) ----

def bdat(c, chunk, last=False):
    c.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
    return c.reply()


def test_bdat_chunks_then_last(relay):
    msgid = new_msgid()
    data = message(msgid, body=b".leading dot stays\r\nline two\r\n" + (b"x" * 70 + b"\r\n") * 40)
    chunks = [data[:10], data[10:1500], data[1500:]]
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        total = 0
        for ch in chunks[:-1]:
            r = bdat(c, ch)
            total += len(ch)
            assert r.code == 250 and r.enhanced == "2.0.0", str(r)
            assert str(total) in r.text, str(r)
        r = bdat(c, chunks[-1], last=True)
        assert r.code == 250 and "queued as" in r.text, str(r)
        c.expect("QUIT", 221)
    m = wait_captured_id(relay, msgid)
    assert body_of(m["data"]) == body_of(data)  # no dot-unstuffing in BDAT


def test_bdat_zero_last_ends_the_message(relay):
    msgid = new_msgid()
    data = message(msgid)
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        assert bdat(c, data).code == 250
        r = bdat(c, b"", last=True)
        assert r.code == 250 and "queued as" in r.text, str(r)
    assert body_of(wait_captured_id(relay, msgid)["data"]) == body_of(data)


def test_bdat_before_mail_is_refused_and_chunk_consumed(relay):
    watch = CaptureWatch(relay)
    with open_session(relay, auth=False) as c:
        # if the chunk were read as commands, HELP would answer 214
        r = bdat(c, b"HELP\r\nHELP\r\n", last=True)
        assert (r.code, r.enhanced) == (503, "5.5.1"), str(r)
        c.expect("NOOP", 250, "2.0.0")
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        msgid = new_msgid()
        r = bdat(c, message(msgid), last=True)
        assert r.code == 250, str(r)
    watch.assert_only([msgid])


def test_bdat_without_recipient_is_refused_and_chunk_consumed(relay):
    watch = CaptureWatch(relay)
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        r = bdat(c, b"HELP\r\n", last=False)
        # RFC 5321 3.3 allows 503 or 554 when no recipient was accepted
        assert r.code in (503, 554) and r.enhanced == "5.5.1", str(r)
        c.expect("NOOP", 250, "2.0.0")
        c.expect("RSET", 250)
    watch.assert_only([])


def test_data_after_bdat_is_refused(relay):
    msgid = new_msgid()
    data = message(msgid)
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        assert bdat(c, data).code == 250
        c.expect("DATA", 503, "5.5.1")
        r = bdat(c, b"", last=True)
        assert r.code == 250 and "queued as" in r.text, str(r)
    assert body_of(wait_captured_id(relay, msgid)["data"]) == body_of(data)


@pytest.mark.parametrize("arg", ["", "x", "-5", "10 NOTLAST", "5 LAST extra"])
def test_bdat_syntax_errors(relay, arg):
    with open_session(relay, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect(f"BDAT {arg}".rstrip(), 501, "5.5.4")
        c.expect("NOOP", 250)


# ---- pipelining (RFC 2920) ----

def read_codes(c, n):
    return [c.reply() for _ in range(n)]


def test_whole_transaction_in_one_send(relay):
    msgid = new_msgid()
    tok = base64.b64encode(f"\0app\0{PASSWORD}".encode())
    batch = (b"EHLO client.test\r\nAUTH PLAIN " + tok + b"\r\n"
             b"MAIL FROM:<app@sender.test>\r\nRCPT TO:<a@example.net>\r\n"
             b"RCPT TO:<b@example.net>\r\nDATA\r\n" + dot_stuff(message(msgid)) + b".\r\nQUIT\r\n")
    with Conn(relay.port) as c:
        c.send(batch)
        rs = read_codes(c, 7)
        got = [(r.code, r.enhanced) for r in rs]
        assert got == [(250, ""), (235, "2.7.0"), (250, "2.1.0"), (250, "2.1.5"), (250, "2.1.5"),
                       (354, ""), (250, "2.0.0")], [str(r) for r in rs]
        assert "PIPELINING" in rs[0].lines
        assert c.reply().code == 221
        assert c.closed()
    m = wait_captured_id(relay, msgid)
    assert m["envelope"]["rcpt_to"] == ["a@example.net", "b@example.net"]
    assert m["envelope"]["meta"]["auth"] == "app"


def test_two_messages_pipelined(relay):
    ids = [new_msgid(), new_msgid()]
    batch = b""
    for i in ids:
        batch += (b"MAIL FROM:<app@sender.test>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n"
                  + dot_stuff(message(i, subject=i)) + b".\r\n")
    with Conn(relay.port, source=RELAY_NET_SOURCE) as c:
        c.ehlo()
        c.send(batch + b"QUIT\r\n")
        rs = read_codes(c, 9)
        assert [r.code for r in rs] == [250, 250, 354, 250, 250, 250, 354, 250, 221], \
            [str(r) for r in rs]
        qids = [re.search(r"queued as (\S+)", rs[k].text).group(1) for k in (3, 7)]
        assert qids[0] != qids[1]
    for i, q in zip(ids, qids):
        m = wait_captured_id(relay, i)
        assert m["envelope"]["queue_id"] == q
        assert count_captured(relay, i) == 1
        assert f"Subject: {i}".encode() in header_block(m["data"])


def test_pipelined_rejections_keep_their_order(relay):
    batch = (b"MAIL FROM:<app@sender.test>\r\nRCPT TO:<bad address>\r\n"
             b"RCPT TO:<ok@example.net>\r\nVRFY x\r\nRSET\r\nRCPT TO:<late@example.net>\r\n"
             b"NOOP\r\n")
    with Conn(relay.port, source=RELAY_NET_SOURCE) as c:
        c.ehlo()
        c.send(batch)
        rs = read_codes(c, 7)
        assert [r.code for r in rs] == [250, 501, 250, 252, 250, 503, 250], [str(r) for r in rs]
        assert rs[1].enhanced == "5.1.3" and rs[5].enhanced == "5.5.1"
