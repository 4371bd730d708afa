"""Real SMTP clients against the relay: swaks and Python's smtplib, over
STARTTLS and implicit TLS, with AUTH PLAIN and LOGIN, pipelining, SMTPUTF8
and BDAT; and the trace and identity fields the relay adds on intake."""
import re
import smtplib
import subprocess
from email.message import EmailMessage
from email import policy

import pytest

from conftest import PASSWORD, wait_for
from support_smtp import (Conn, body_of, client_tls_context, header_block, message, new_msgid,
                          queued_id, wait_captured_id)

SWAKS = "/usr/bin/swaks"


@pytest.fixture
def relay(shared_sluice):
    return shared_sluice


def swaks(*args):
    r = subprocess.run([SWAKS, "--from", "app@sender.test", "--to", "rcpt@example.net",
                        "--helo", "client.test", *args], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def received(data):
    """The first Received field, unfolded."""
    m = re.match(rb"Received:(.*?\r\n)(?![ \t])", data, re.S)
    assert m, data[:300]
    return re.sub(r"\s+", " ", m.group(1).decode())


def assert_trace(m, tls_version, user="app", proto="ESMTPSA"):
    r = received(m["data"])
    assert r.startswith(" from client.test ([127.0.0.1]) by relay.test"), r
    assert f"with {proto} id {m['envelope']['queue_id']}" in r, r
    assert f"(using {tls_version} " in r, r
    assert f"(authenticated as {user})" in r, r


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth(relay, mech):
    msgid = new_msgid()
    rc, out = swaks("--server", f"127.0.0.1:{relay.port}", "--tls", "--auth", mech,
                    "--auth-user", "app", "--auth-password", PASSWORD,
                    "--header", f"Message-Id: <{msgid}>")
    assert rc == 0, out
    assert re.search(r"<~  235 2\.7\.0", out), out
    qid = re.search(r"<~  250 2\.0\.0 Ok: queued as (\S+)", out).group(1)
    m = wait_captured_id(relay, msgid)
    assert m["envelope"]["queue_id"] == qid
    tls = re.search(r"TLS started with cipher (TLSv1\.[23])", out).group(1)
    assert_trace(m, tls)


def test_swaks_implicit_tls(relay):
    msgid = new_msgid()
    rc, out = swaks("--server", f"127.0.0.1:{relay.tls_port}", "--tlsc", "--auth", "LOGIN",
                    "--auth-user", "app", "--auth-password", PASSWORD,
                    "--header", f"Message-Id: <{msgid}>")
    assert rc == 0, out
    assert "STARTTLS" not in out
    m = wait_captured_id(relay, msgid)
    assert_trace(m, "TLSv1.3")


def test_swaks_pipelining(relay):
    msgid = new_msgid()
    rc, out = swaks("--server", f"127.0.0.1:{relay.port}", "--tls", "--pipeline",
                    "--auth", "PLAIN", "--auth-user", "app", "--auth-password", PASSWORD,
                    "--to", "a@example.net,b@example.net", "--header", f"Message-Id: <{msgid}>")
    assert rc == 0, out
    lines = out.splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith(" ~> MAIL FROM"))
    # MAIL, both RCPTs and DATA went out before the first of their replies
    assert [l[:8] for l in lines[i:i + 4]] == [" ~> MAIL", " ~> RCPT", " ~> RCPT", " ~> DATA"]
    assert [l.split()[1] for l in lines[i + 4:i + 8]] == ["250", "250", "250", "354"]
    m = wait_captured_id(relay, msgid)
    assert m["envelope"]["rcpt_to"] == ["a@example.net", "b@example.net"]


def test_swaks_wrong_password(relay):
    watch_before = len(relay.events("smtp.accepted"))
    rc, out = swaks("--server", f"127.0.0.1:{relay.port}", "--tls", "--auth", "PLAIN",
                    "--auth-user", "app", "--auth-password", "not the password")
    assert rc != 0
    assert re.search(r"<~\*? +535 5\.7\.8", out), out
    assert len(relay.events("smtp.accepted")) == watch_before


def test_smtplib_starttls_login_send_message(relay):
    msgid = new_msgid()
    msg = EmailMessage()
    msg["From"] = "App <app@sender.test>"
    msg["To"] = "rcpt@example.net"
    msg["Subject"] = "smtplib"
    msg["Message-ID"] = f"<{msgid}>"
    msg.set_content("Sent by smtplib.\n")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.login("app", PASSWORD)
        assert s.send_message(msg) == {}
        code, text = s.noop()
        assert code == 250
        version = s.sock.version()
    m = wait_captured_id(relay, msgid)
    assert_trace(m, version)
    assert b"Sent by smtplib.\r\n" in body_of(m["data"])


def test_smtplib_smtp_ssl_implicit_tls(relay):
    msgid = new_msgid()
    with smtplib.SMTP_SSL("127.0.0.1", relay.tls_port, local_hostname="client.test",
                          context=client_tls_context(), timeout=10) as s:
        s.login("app", PASSWORD)
        refused = s.sendmail("app@sender.test", ["rcpt@example.net"], message(msgid))
        assert refused == {}
        version = s.sock.version()
    assert_trace(wait_captured_id(relay, msgid), version)


def utf8_message(msgid):
    msg = EmailMessage(policy=policy.SMTPUTF8)
    msg["From"] = "Jörg <jörg@exämple.test>"
    msg["To"] = "José <josé@example.net>"
    msg["Subject"] = "Grüße"
    msg["Message-ID"] = f"<{msgid}>"
    msg.set_content("Hällo wörld.\n")
    return msg


def test_smtplib_smtputf8(relay):
    # smtplib adds SMTPUTF8 and BODY=8BITMIME itself for non-ASCII addresses
    msgid = new_msgid()
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.ehlo("client.test")
        assert s.has_extn("smtputf8")
        s.login("app", PASSWORD)
        assert s.send_message(utf8_message(msgid)) == {}
    m = wait_captured_id(relay, msgid)
    assert m["envelope"]["mail_from"] == "jörg@exämple.test"
    assert m["envelope"]["rcpt_to"] == ["josé@example.net"]
    assert m["envelope"]["smtputf8"] is True
    assert "From: Jörg <jörg@exämple.test>".encode() in header_block(m["data"])
    assert "Hällo wörld.".encode() in body_of(m["data"])
    assert " with UTF8SMTPSA id " in received(m["data"])


def test_smtplib_sendmail_with_smtputf8_option(relay):
    msgid = new_msgid()
    data = utf8_message(msgid).as_bytes(policy=policy.SMTPUTF8.clone(linesep="\r\n"))
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.login("app", PASSWORD)
        assert s.sendmail("jörg@exämple.test", ["josé@example.net"], data,
                          mail_options=["SMTPUTF8"]) == {}
    assert wait_captured_id(relay, msgid)["envelope"]["rcpt_to"] == ["josé@example.net"]


def test_smtplib_send_message_with_explicit_smtputf8(relay):
    msgid = new_msgid()
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.login("app", PASSWORD)
        assert s.send_message(utf8_message(msgid), mail_options=["SMTPUTF8"]) == {}
    wait_captured_id(relay, msgid)


def test_utf8_address_without_smtputf8_is_refused(relay):
    with Conn(relay.port) as c:
        c.ehlo()
        c.login()
        c.expect("MAIL FROM:<jörg@exämple.test>", 553, "5.6.7")
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<josé@example.net>", 553, "5.6.7")


def test_smtplib_bdat_chunking(relay):
    # smtplib has no BDAT; after its STARTTLS and AUTH the raw socket
    # carries the chunks
    msgid = new_msgid()
    data = message(msgid, body=b"chunk one\r\n" + b"chunk two\r\n" * 50)
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.ehlo("client.test")
        assert s.has_extn("chunking")
        s.login("app", PASSWORD)
        assert s.mail("app@sender.test")[0] == 250
        assert s.rcpt("rcpt@example.net")[0] == 250
        half = len(data) // 2
        s.send(f"BDAT {half}\r\n".encode() + data[:half])
        code, text = s.getreply()
        assert code == 250, text
        s.send(f"BDAT {len(data) - half} LAST\r\n".encode() + data[half:])
        code, text = s.getreply()
        assert code == 250 and b"queued as" in text, text
    m = wait_captured_id(relay, msgid)
    assert body_of(m["data"]) == body_of(data)


# ---- trace and identity fields ----

def send_raw(relay, data):
    with Conn(relay.port) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.login()
        r = c.send_message(data)
        return queued_id(r), c.tls_version


def test_message_id_and_date_added_when_missing(relay):
    data = message(None, subject="no ids", date=False)
    qid, version = send_raw(relay, data)
    m = wait_for_queue_id(relay, qid)
    head = header_block(m["data"])
    ids = re.findall(rb"(?im)^Message-ID:\s*<([^>]+)>", head)
    dates = re.findall(rb"(?im)^Date:\s*(.+)\r\n", head)
    assert len(ids) == 1 and len(dates) == 1, head
    assert ids[0].decode() == m["envelope"]["meta"]["message_id"]
    assert ids[0].decode().endswith("@relay.test")
    assert re.match(rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$",
                    dates[0]), dates
    assert_trace(m, version, proto="ESMTPSA")
    assert body_of(m["data"]) == body_of(data)


def test_message_id_and_date_kept_when_present(relay):
    msgid = new_msgid()
    data = message(msgid, subject="has ids")
    send_raw(relay, data)
    m = wait_captured_id(relay, msgid)
    head = header_block(m["data"])
    assert re.findall(rb"(?im)^Message-ID:.*$", head) == [f"Message-ID: <{msgid}>\r".encode()]
    assert re.findall(rb"(?im)^Date:.*$", head) == [b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r"]
    # the original header block follows the relay's Received field unchanged
    assert m["data"].endswith(data)
    assert m["data"].startswith(b"Received: ")


def wait_for_queue_id(relay, qid):
    return wait_for(lambda: next((m for m in relay.captured()
                                  if m["envelope"]["queue_id"] == qid), None),
                    10, f"capture of {qid}")
