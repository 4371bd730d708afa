"""Authorisation rules, black box: each rule of a credential refuses what it
should with the right reply and lets through what it should (sender and
recipient patterns, header From/Sender, rate, quota, size, attachments,
required headers), and the classic open-relay tricks are refused for
everyone."""
import datetime
import re
import signal

import pytest

from conftest import PASSWORD, Sluice, wait_for
from test_observability import scrape
from support_smtp import Conn, dot_stuff, new_msgid, wait_captured_id, captured_with

RELAY_SOURCE = "127.0.0.3"  # relays without AUTH, within relay_allow_from/_rcpt


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    s = Sluice(tmp_path_factory.mktemp("rules"), env={
        "SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
        "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_SOURCE}/32",
        "SLUICE_POLICY_RELAY_ALLOW_FROM": "*@app.example",
        "SLUICE_POLICY_RELAY_ALLOW_RCPT": "*@corp.example",
    })
    creds = {
        "shop": ["--allow-from", "*@shop.example", "--allow-from", "*@*.shop.example"],
        "staging": ["--allow-from", "*@shop.example", "--allow-rcpt", "*@team.example"],
        "rated": ["--rate", "2/min"],
        "quota": ["--quota", "2/day"],
        "refund": ["--quota", "2/day"],
        "small": ["--max-size", "2k"],
    }
    for name, args in creds.items():
        s.cli("creds", "add", "--init", name, "--password", *args, input=PASSWORD + "\n")
    s.start()
    yield s
    s.stop(signal.SIGKILL)


def session(s, cred=None, source=None):
    c = Conn(s.port, source=source)
    c.ehlo()
    if cred:
        c.login(cred, PASSWORD)
    return c


def msg(msgid, sender="orders@shop.example", headers=b"", body=b"Hello.\r\n"):
    h = f"From: Shop <{sender}>\r\nTo: someone@example.net\r\nSubject: rules\r\n"
    h += f"Message-ID: <{msgid}>\r\n"
    return h.encode() + headers + b"\r\n" + body


def data(c, content):
    c.expect("DATA", 354)
    c.send(dot_stuff(content) + b".\r\n")
    return c.reply()


def rejected(s, reason):
    return [e for e in s.events("smtp.rejected") if e.get("reason") == reason]


def send_ok(s, c, sender="orders@shop.example", rcpt="someone@example.net", make=None):
    """One accepted transaction; make(msgid) builds the content."""
    msgid = new_msgid()
    c.expect(f"MAIL FROM:<{sender}>", 250)
    c.expect(f"RCPT TO:<{rcpt}>", 250)
    r = data(c, make(msgid) if make else msg(msgid, sender))
    assert r.code == 250, str(r)
    return msgid


def test_sender_patterns(relay):
    before = len(rejected(relay, "sender"))
    with session(relay, "shop") as c:
        send_ok(relay, c, "orders@shop.example")
        send_ok(relay, c, "news@eu.shop.example")
        r = c.expect("MAIL FROM:<x@evil.test>", 550, "5.7.1")
        assert r.text.startswith("5.7.1 Sender <x@evil.test> not allowed for credential 'shop' "
                                 "(allowed: "), str(r)
        assert "*@shop.example" in r.text and "*@*.shop.example" in r.text, str(r)
        c.expect("MAIL FROM:<x@shop.example.evil.test>", 550, "5.7.1")
        c.expect("MAIL FROM:<>", 550, "5.7.1")
    ev = rejected(relay, "sender")[before:]
    assert len(ev) == 3 and ev[0]["credential"] == "shop", ev


def test_header_from_and_sender(relay):
    with session(relay, "shop") as c:
        refused_ids = []
        for hdr_from, extra, text in (
                ("Shop <orders@evil.test>", b"",
                 "5.7.1 Header From domain evil.test not allowed for credential 'shop'"),
                ('"orders@shop.example" <x@evil.test>', b"",
                 "5.7.1 Header From domain evil.test not allowed for credential 'shop'"),
                ("orders@shop.example", b"Sender: agent@evil.test\r\n",
                 "5.7.1 Header Sender domain evil.test not allowed for credential 'shop'"),
                ("orders@shop.example", b"Resent-From: ceo@evil.test\r\n",
                 "5.7.1 Header Resent-From domain evil.test not allowed for credential 'shop'"),
                ("orders@shop.example", b"Resent-Sender: x@evil.test\r\n",
                 "5.7.1 Header Resent-Sender domain evil.test not allowed for credential 'shop'")):
            msgid = new_msgid()
            refused_ids.append(msgid)
            content = (f"From: {hdr_from}\r\nSubject: x\r\nMessage-ID: <{msgid}>\r\n".encode()
                       + extra + b"\r\nbody\r\n")
            c.expect("MAIL FROM:<orders@shop.example>", 250)
            c.expect("RCPT TO:<someone@example.net>", 250)
            r = data(c, content)
            assert (r.code, r.text) == (550, text), str(r)
        # aligned subdomain passes
        good = send_ok(relay, c, make=lambda i: msg(i, "a@eu.shop.example"))
    wait_captured_id(relay, good)
    assert rejected(relay, "header_from")
    for i in refused_ids:
        assert not captured_with(relay, i)


def test_recipient_patterns_staging_only_to_team(relay):
    with session(relay, "staging") as c:
        c.expect("MAIL FROM:<build@shop.example>", 250)
        c.expect("RCPT TO:<dev@team.example>", 250)
        r = c.expect("RCPT TO:<customer@example.net>", 550, "5.7.1")
        assert r.text == ("5.7.1 Recipient not allowed for credential 'staging' "
                          "(allowed: *@team.example)")
        msgid = new_msgid()
        r = data(c, msg(msgid, "build@shop.example"))
        assert r.code == 250, str(r)
    m = wait_captured_id(relay, msgid)
    assert m["envelope"]["rcpt_to"] == ["dev@team.example"], m["envelope"]


def test_rate_limit(relay):
    with session(relay, "rated") as c:
        for _ in range(2):
            c.expect("MAIL FROM:<a@rated.example>", 250)
            c.expect("RSET", 250)
        r = c.expect("MAIL FROM:<a@rated.example>", 450, "4.7.1")
        m = re.fullmatch(r"4\.7\.1 Rate limit of 2/min for credential 'rated' exceeded; "
                         r"try again in (\d+) s", r.text)
        assert m and 1 <= int(m.group(1)) <= 30, str(r)
    assert rejected(relay, "rate")[-1]["credential"] == "rated"


def test_quota(relay):
    with session(relay, "quota") as c:
        for _ in range(2):
            send_ok(relay, c, "a@quota.example")
        r = c.expect("MAIL FROM:<a@quota.example>", 452, "4.7.1")
        tomorrow = (datetime.datetime.now(datetime.timezone.utc).date()
                    + datetime.timedelta(days=1)).isoformat()
        assert r.text == (f"4.7.1 Daily quota of 2 messages for credential 'quota' reached; "
                          f"resets at {tomorrow}T00:00:00Z"), str(r)
    assert rejected(relay, "quota")


def test_quota_is_spent_only_by_accepted_mail(relay):
    """A MAIL reserves a unit of the quota; a transaction that ends without
    250 (RSET, a refused message, a dropped connection) gives it back."""
    with session(relay, "refund") as c:
        for _ in range(3):
            c.expect("MAIL FROM:<a@refund.example>", 250)
            c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@refund.example>", 250)
        c.expect("RCPT TO:<someone@example.net>", 250)
        r = data(c, b"Subject: x\r\n\r\nnul \x00 here\r\n")
        assert r.code == 554, str(r)
    c = session(relay, "refund")
    c.expect("MAIL FROM:<a@refund.example>", 250)
    c.close()  # gone mid-transaction: the relay notices, the unit goes back
    wait_for(lambda: scrape(relay).get("sluice_sessions") == 0, what="the session to end")
    with session(relay, "refund") as c:
        for _ in range(2):
            send_ok(relay, c, "a@refund.example")
        c.expect("MAIL FROM:<a@refund.example>", 452, "4.7.1")


def test_max_size(relay):
    with session(relay, "small") as c:
        ehlo = c.ehlo()
        assert "SIZE 2048" in ehlo.lines, ehlo
        r = c.expect("MAIL FROM:<a@small.example> SIZE=3000", 552, "5.3.4")
        assert "credential's limit of 2048 bytes" in r.text, str(r)
        c.expect("MAIL FROM:<a@small.example>", 250)
        c.expect("RCPT TO:<someone@example.net>", 250)
        r = data(c, msg(new_msgid(), "a@small.example", body=(b"y" * 70 + b"\r\n") * 40))
        assert (r.code, r.text) == (
            552, "5.3.4 Message size exceeds the credential's limit of 2048 bytes"), str(r)
        send_ok(relay, c, "a@small.example",
                make=lambda i: msg(i, "a@small.example", body=b"z" * 70 + b"\r\n"))
    assert rejected(relay, "size")


ATTACHMENT = (b"MIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n")


def with_attachment(msgid, filename, ctype):
    body = (b"--XX\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            b"--XX\r\nContent-Type: " + ctype + b"\r\n"
            b"Content-Disposition: attachment; filename=\"" + filename + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n")
    return msg(msgid, headers=ATTACHMENT, body=body)


def test_blocked_attachment(relay):
    with session(relay, "shop") as c:
        bad = new_msgid()
        c.expect("MAIL FROM:<orders@shop.example>", 250)
        c.expect("RCPT TO:<someone@example.net>", 250)
        r = data(c, with_attachment(bad, b"invoice.pdf.exe", b"application/pdf"))
        assert (r.code, r.enhanced) == (554, "5.7.1"), str(r)
        assert "'invoice.pdf.exe'" in r.text and ".exe" in r.text, str(r)
        good = send_ok(relay, c,
                       make=lambda i: with_attachment(i, b"report.pdf", b"application/pdf"))
    ev = [e for e in relay.events("smtp.accepted") if e.get("message_id") == good]
    assert ev and "report.pdf;application/pdf;" in ev[0]["attachments"], ev
    assert not captured_with(relay, bad)
    assert rejected(relay, "content")


def test_required_header(relay):
    with session(relay, "shop") as c:
        c.expect("MAIL FROM:<orders@shop.example>", 250)
        c.expect("RCPT TO:<someone@example.net>", 250)
        r = data(c, b"Subject: no author\r\n\r\nbody\r\n")
        assert (r.code, r.text) == (550, "5.6.0 Missing required header: From"), str(r)


def test_open_relay_attempts_are_refused(relay):
    before = len(relay.events("smtp.accepted"))
    # no AUTH, not from the relay network
    with session(relay) as c:
        c.expect("MAIL FROM:<orders@shop.example>", 530, "5.7.0")
    with session(relay, "shop") as c:
        c.expect("MAIL FROM:<someone@victim.example>", 550, "5.7.1")
    with session(relay, "staging") as c:
        c.expect("MAIL FROM:<build@shop.example>", 250)
        c.expect("RCPT TO:<someone@victim.example>", 550, "5.7.1")
        # source route, percent hack, quoted local part, bang path: all
        # would end at a domain the pattern allows, and all are refused
        c.expect("RCPT TO:<@team.example:victim@victim.example>", 553, "5.1.3")
        r = c.expect("RCPT TO:<victim%victim.example@team.example>", 550, "5.7.1")
        assert "percent hack" in r.text
        c.expect('RCPT TO:<"victim@victim.example"@team.example>', 550, "5.7.1")
        c.expect('RCPT TO:<"victim%victim.example"@team.example>', 550, "5.7.1")
        r = c.expect("RCPT TO:<victim.example!victim@team.example>", 550, "5.7.1")
        assert "bang path" in r.text
        c.expect("DATA", 503)
    # the tricks are refused for credentials without recipient rules too
    with session(relay, "shop") as c:
        c.expect("MAIL FROM:<orders@shop.example>", 250)
        c.expect("RCPT TO:<victim%victim.example@example.net>", 550, "5.7.1")
    assert len(relay.events("smtp.accepted")) == before


def test_relay_network_client_rules(relay):
    with session(relay, source=RELAY_SOURCE) as c:
        r = c.expect("MAIL FROM:<x@shop.example>", 550, "5.7.1")
        assert "unauthenticated relay clients (allowed: *@app.example)" in r.text
        c.expect("MAIL FROM:<cron@app.example>", 250)
        c.expect("RCPT TO:<someone@example.net>", 550, "5.7.1")
        c.expect("RCPT TO:<ops@corp.example>", 250)
        msgid = new_msgid()
        r = data(c, msg(msgid, "cron@app.example"))
        assert r.code == 250, str(r)
        c.expect("MAIL FROM:<cron@app.example>", 250)
        c.expect("RCPT TO:<ops@corp.example>", 250)
        r = data(c, msg(new_msgid(), "spoof@bank.example"))
        assert (r.code, r.enhanced) == (550, "5.7.1"), str(r)
        assert "unauthenticated relay clients" in r.text
    assert wait_captured_id(relay, msgid)["envelope"]["meta"].get("auth") is None
