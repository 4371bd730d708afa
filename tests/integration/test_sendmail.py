"""The sendmail(1) entry and `sluice send` against a real daemon: PHP's
mail(), cron's command line, bsd-mailx, -bs, the outbox across an outage and
a kill -9 of its forwarder, MIME read back by Python's email package and the
DKIM signature checked by dkimpy."""
import email
import email.policy
import json
import os
import shutil
import signal
import stat
import subprocess
import threading

import dkim
import pytest
from aiosmtpd.controller import Controller

from conftest import BIN, PASSWORD, free_port, wait_for

RELAY = """
[server]
relay_networks = 127.0.0.1/32
"""


@pytest.fixture
def sendmail_link(tmp_path):
    """The binary under the name sendmail, as /usr/sbin/sendmail would be."""
    link = tmp_path / "bin" / "sendmail"
    link.parent.mkdir()
    link.symlink_to(os.path.abspath(BIN))
    return link


def env_for(s, tmp_path, **extra):
    env = dict(s.env)
    env["SLUICE_SENDMAIL_OUTBOX_DIR"] = str(tmp_path / "outbox")
    env["SLUICE_SENDMAIL_TIMEOUT"] = "10s"
    env.update(extra)
    return env


def run(args, env, input=b"", timeout=60):
    return subprocess.run(args, env=env, input=input, capture_output=True, timeout=timeout)


def parse(data):
    """The message as Python's email package reads a file in local line ends."""
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)


def outbox(tmp_path):
    d = tmp_path / "outbox"
    return sorted(p for p in d.glob("*.msg")) if d.exists() else []


def test_cron_style_command_line_and_t_with_bcc(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY).start()
    env = env_for(s, tmp_path)
    # cron: sendmail -FCronDaemon -i -B8BITMIME -oem USER, message without From
    r = run([str(sendmail_link), "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "ops@dest.test"], env,
            b"Subject: Cron <root@host> backup\nContent-Type: text/plain\n\n.\nall good\n")
    assert r.returncode == 0, r.stderr
    m = s.wait_captured(1)[0]
    assert m["envelope"]["rcpt_to"] == ["ops@dest.test"]
    assert b'From: "CronDaemon" <' in m["data"]
    assert b"\r\n.\r\nall good\r\n" in m["data"]  # -i: the lone dot is text
    # -t: recipients from the header, Bcc gone from the message
    r = run([str(sendmail_link), "-t", "-f", "app@shop.test"], env,
            b"From: App <app@shop.test>\nTo: \"Doe, J\" <j@dest.test>, k@dest.test\n"
            b"Cc: team: l@dest.test;\nBcc: secret@dest.test\nSubject: t\n\nbody\n.\nnot sent\n")
    assert r.returncode == 0, r.stderr
    m = s.wait_captured(2)[1]
    assert m["envelope"]["mail_from"] == "app@shop.test"
    assert sorted(m["envelope"]["rcpt_to"]) == ["j@dest.test", "k@dest.test", "l@dest.test",
                                                "secret@dest.test"]
    assert b"secret" not in m["data"] and b"Bcc" not in m["data"]
    assert b"not sent" not in m["data"]  # without -i the dot ends the message


def test_usage_and_injection_are_refused(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY)
    env = env_for(s, tmp_path)
    r = run([str(sendmail_link), "-f", "a@b.test\nRCPT TO:<x@y>", "c@d.test"], env, b"x\n")
    assert r.returncode == 64 and b"CR or LF" in r.stderr
    r = run([str(sendmail_link), "-Q"], env)
    assert r.returncode == 64 and b"unknown option -Q" in r.stderr
    r = run([str(sendmail_link)], env, b"Subject: x\n\nno rcpt\n")
    assert r.returncode == 64 and b"no recipients" in r.stderr
    r = run([BIN, "send", "--from", "a@shop.test", "--to", "b@dest.test", "--subject",
             "x\r\nBcc: victim@dest.test", "--dry-run"], env)
    assert r.returncode == 2 and b"CR or LF" in r.stderr
    r = run([BIN, "send", "--from", "a@shop.test", "--to", "b@dest.test", "--header",
             "Content-Type: text/html", "--dry-run"], env)
    assert r.returncode == 2 and b"Content-Type" in r.stderr


def test_php_mail(make_sluice, tmp_path, sendmail_link):
    php = shutil.which("php")
    if not php:
        pytest.skip("php-cli is not installed (scripts/deps.sh test)")
    s = make_sluice(config_text=RELAY).start()
    env = env_for(s, tmp_path)
    code = ('var_dump(mail("customer@dest.test", "Your order", "Line one\\n.\\nLine three", '
            '"From: Shop <orders@shop.test>"));')
    r = run([php, "-d", f"sendmail_path={sendmail_link} -t -i", "-r", code], env)
    assert r.returncode == 0 and b"bool(true)" in r.stdout, r.stdout + r.stderr
    m = s.wait_captured(1)[0]
    assert m["envelope"]["rcpt_to"] == ["customer@dest.test"]
    msg = parse(m["data"])
    assert msg["Subject"] == "Your order" and "orders@shop.test" in msg["From"]
    assert "Line one\n.\nLine three" in msg.get_content()


def test_bsd_mailx(make_sluice, tmp_path, sendmail_link):
    mailx = shutil.which("bsd-mailx")
    if not mailx:
        pytest.skip("bsd-mailx is not installed (scripts/deps.sh test)")
    s = make_sluice(config_text=RELAY).start()
    rc = tmp_path / "mailrc"
    rc.write_text(f"set sendmail={sendmail_link}\n")
    env = env_for(s, tmp_path, MAILRC=str(rc), HOME=str(tmp_path))
    r = run([mailx, "-s", "report of the night", "-c", "cc@dest.test", "ops@dest.test"], env,
            b"all systems nominal\n")
    assert r.returncode == 0, r.stderr
    m = s.wait_captured(1)[0]
    assert sorted(m["envelope"]["rcpt_to"]) == ["cc@dest.test", "ops@dest.test"]
    assert b"report of the night" in m["data"] and b"all systems nominal" in m["data"]


def test_bs_dialogue(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY).start()
    env = env_for(s, tmp_path)
    dialogue = (b"EHLO client\r\nMAIL FROM:<app@shop.test>\r\nRCPT TO:<a@dest.test>\r\n"
                b"RCPT TO:<not an address>\r\nDATA\r\nSubject: bs\r\n\r\n..leading dot\r\n.\r\n"
                b"MAIL FROM:<app@shop.test>\r\nDATA\r\nQUIT\r\n")
    r = run([str(sendmail_link), "-bs"], env, dialogue)
    assert r.returncode == 0
    codes = [l[:3] for l in r.stdout.split(b"\r\n") if l[:3].isdigit() and l[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"501", b"354", b"250", b"250", b"554",
                     b"221"], r.stdout
    m = s.wait_captured(1)[0]
    assert m["envelope"]["rcpt_to"] == ["a@dest.test"]
    assert b"\r\n.leading dot\r\n" in m["data"]


def test_credential_file_mode_and_refused_login(make_sluice, tmp_path, sendmail_link):
    s = make_sluice()  # AUTH required
    s.add_user("app")
    s.start()
    cred = tmp_path / "cred"
    cred.write_text(f"# for sendmail\nuser = app\npassword = {PASSWORD}\n")
    cred.chmod(0o644)
    env = env_for(s, tmp_path, SLUICE_SENDMAIL_CREDENTIAL_FILE=str(cred))
    r = run([str(sendmail_link), "-f", "app@shop.test", "a@dest.test"], env, b"Subject: x\n\nx\n")
    assert r.returncode == 77 and b"chmod 600" in r.stderr
    cred.chmod(0o600)
    r = run([str(sendmail_link), "-f", "app@shop.test", "a@dest.test"], env, b"Subject: x\n\nx\n")
    assert r.returncode == 0, r.stderr
    assert s.wait_captured(1)[0]["envelope"]["rcpt_to"] == ["a@dest.test"]
    cred.write_text("user = app\npassword = wrong password\n")
    r = run([str(sendmail_link), "-f", "app@shop.test", "a@dest.test"], env, b"Subject: y\n\ny\n")
    assert r.returncode == 77 and b"refused the credential" in r.stderr
    assert outbox(tmp_path) == []


def test_5xx_recipient_is_not_kept(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY + "[policy]\nrelay_allow_rcpt = *@dest.test\n").start()
    env = env_for(s, tmp_path)
    r = run([str(sendmail_link), "-f", "app@shop.test", "x@elsewhere.test"], env, b"Subject: x\n\nx\n")
    assert r.returncode == 67, r.stderr
    assert b"x@elsewhere.test" in r.stderr and b"5" in r.stderr
    assert outbox(tmp_path) == []


def test_outbox_survives_an_outage_and_is_sent_once(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY)
    env = env_for(s, tmp_path)
    r = run([str(sendmail_link), "-f", "app@shop.test", "a@dest.test"], env,
            b"Subject: during the outage\n\nkept\n")
    assert r.returncode == 0, r.stderr
    assert b"outbox" in r.stderr
    files = outbox(tmp_path)
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    s.start()
    r = run([BIN, "outbox", "flush"], env)
    assert r.returncode == 0 and b"1 sent" in r.stdout, r.stdout + r.stderr
    r = run([str(sendmail_link), "-q"], env)
    assert r.returncode == 0 and b"0 sent" in r.stdout
    got = s.wait_captured(1)
    assert len(got) == 1 and b"during the outage" in got[0]["data"]
    assert outbox(tmp_path) == []
    # with forward_outbox, the next message carries the waiting ones along
    s.stop()
    run([str(sendmail_link), "a@dest.test"], env, b"Subject: second\n\nx\n")
    s.start()
    r = run([str(sendmail_link), "a@dest.test"], env, b"Subject: third\n\nx\n")
    assert r.returncode == 0
    got = s.wait_captured(3)
    assert [b"Subject: second" in g["data"] for g in got].count(True) == 1
    assert outbox(tmp_path) == []


class Stall:
    """An SMTP sink that accepts the first messages and never answers the
    end of the third: the forwarder is then caught in flight."""

    def __init__(self, marker):
        self.got, self.marker, self.release = [], marker, threading.Event()

    async def handle_DATA(self, server, session, envelope):
        import asyncio
        self.got.append(envelope.content)
        if len(self.got) == 3:
            self.marker.write_text("in flight")
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 gone"
        return "250 OK"


def test_kill9_of_the_forwarder_loses_nothing(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY)
    env = env_for(s, tmp_path)
    for i in range(5):
        r = run([str(sendmail_link), "-f", "app@shop.test", "a@dest.test"], env,
                f"Subject: m{i}\n\nbody {i}\n".encode())
        assert r.returncode == 0
    assert len(outbox(tmp_path)) == 5
    marker = tmp_path / "marker"
    stall = Stall(marker)
    port = free_port()
    ctl = Controller(stall, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        p = subprocess.Popen([BIN, "outbox", "flush"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             env={**env, "SLUICE_SENDMAIL_SERVER": f"127.0.0.1:{port}"})
        wait_for(marker.exists, what="the third message in flight")
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        stall.release.set()
        ctl.stop()
    assert len(stall.got) == 3
    assert len(outbox(tmp_path)) == 3  # the two answered 250 are gone, the one in flight stays
    s.start()
    r = run([BIN, "outbox", "flush"], env)
    assert r.returncode == 0 and b"3 sent" in r.stdout, r.stdout + r.stderr
    got = s.wait_captured(3)
    subjects = sorted(l for g in got for l in g["data"].split(b"\r\n") if l.startswith(b"Subject"))
    assert subjects == [b"Subject: m2", b"Subject: m3", b"Subject: m4"]
    # no message lost; the one in flight is the only one both sinks saw
    first = [c.split(b"Subject: ")[1][:2] for c in stall.got]
    assert first == [b"m0", b"m1", b"m2"]


def keygen(s, domain, selector):
    r = s.cli("dkim", "keygen", "--domain", domain, "--selector", selector, "--algorithm",
              "ed25519", "--out", str(s.var / "dkim"), "--json")
    return json.loads(r.stdout)


def test_send_mime_parsed_by_python_and_dkim_verified(make_sluice, tmp_path):
    s = make_sluice(config_text=RELAY)
    key = keygen(s, "shop.test", "ed1")
    s.start()
    env = env_for(s, tmp_path)
    pdf = bytes(range(256)) * 40
    (tmp_path / "report.pdf").write_bytes(pdf)
    (tmp_path / "Rechnung März.txt").write_bytes("Summe: 12 €\n".encode())
    (tmp_path / "body.html").write_text("<p>Grüße, <b>Jürgen</b></p>", encoding="utf-8")
    r = run([BIN, "send", "--from", "Shöp Ünited <orders@shop.test>", "--to",
             "Jürgen Müller <j@dest.test>", "--bcc", "audit@dest.test", "--subject",
             "Ihre Bestellung — Grüße aus Köln", "--text", "Grüße,\nJürgen\n",
             "--html-file", str(tmp_path / "body.html"), "--attach",
             str(tmp_path / "report.pdf"), "--attach", str(tmp_path / "Rechnung März.txt"),
             "--header", "X-Campaign: spring"], env)
    assert r.returncode == 0, r.stderr
    m = s.wait_captured(1)[0]
    assert sorted(m["envelope"]["rcpt_to"]) == ["audit@dest.test", "j@dest.test"]
    assert b"audit@" not in m["data"]
    msg = parse(m["data"])
    assert str(msg["Subject"]) == "Ihre Bestellung — Grüße aus Köln"
    assert msg["From"].addresses[0].display_name == "Shöp Ünited"
    assert msg["To"].addresses[0].display_name == "Jürgen Müller"
    assert msg["X-Campaign"] == "spring"
    assert msg.get_content_type() == "multipart/mixed"
    assert msg.get_body(("plain",)).get_content() == "Grüße,\nJürgen\n"
    assert "<b>Jürgen</b>" in msg.get_body(("html",)).get_content()
    atts = {a.get_filename(): a for a in msg.iter_attachments()}
    assert set(atts) == {"report.pdf", "Rechnung März.txt"}
    assert atts["report.pdf"].get_content_type() == "application/pdf"
    assert atts["report.pdf"].get_content() == pdf
    assert atts["Rechnung März.txt"].get_payload(decode=True) == "Summe: 12 €\n".encode()
    for line in m["data"].split(b"\r\n"):
        assert len(line) <= 998
    rec = {key["name"].rstrip("."): key["value"]}
    assert dkim.DKIM(m["data"]).verify(
        dnsfunc=lambda name, timeout=5: rec[name.decode().rstrip(".")].encode())
    # the dry run prints what would be sent, and sends nothing
    r = run([BIN, "send", "--from", "a@shop.test", "--to", "b@dest.test", "--subject", "dry",
             "--dry-run"], env)
    assert r.returncode == 0 and b"Subject: dry\r\n" in r.stdout
    assert len(s.captured()) == 1


class FakeSubmission:
    """A submission server that offers STARTTLS and then misbehaves: it
    answers the STARTTLS with plaintext after the 220 ('inject'), or presents
    a certificate that is not the relay's own ('wrongcert')."""

    def __init__(self, mode, cert=None, key=None):
        import socket
        import ssl
        self.mode, self.seen = mode, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        f = conn.makefile("rwb", buffering=0)
        f.write(b"220 fake ESMTP\r\n")
        for line in f:
            self.seen.append(line.strip())
            verb = line[:8].upper()
            if verb.startswith(b"EHLO"):
                f.write(b"250-fake\r\n250 STARTTLS\r\n")
            elif verb.startswith(b"STARTTLS"):
                if self.mode == "inject":
                    f.write(b"220 go ahead\r\n250 injected\r\n")
                else:
                    f.write(b"220 go ahead\r\n")
                    try:
                        tls = self.ctx.wrap_socket(conn, server_side=True)
                        tf = tls.makefile("rwb", buffering=0)
                        for l2 in tf:
                            self.seen.append(b"TLS " + l2.strip())
                            tf.write(b"250 ok\r\n")
                    except OSError:
                        pass
                    break
            else:
                f.write(b"250 ok\r\n")
        conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("mode", ["inject", "wrongcert"])
def test_starttls_injection_and_a_foreign_certificate_keep_the_mail(make_sluice, tmp_path,
                                                                    sendmail_link, certs, mode):
    s = make_sluice(config_text=RELAY)
    own = tmp_path / "own.pem"  # the relay's [tls] cert: not the one the fake presents
    shutil.copy(certs / "self.pem", own)
    fake = FakeSubmission(mode, certs / "server.pem", certs / "server.key")
    env = env_for(s, tmp_path, SLUICE_SENDMAIL_SERVER=f"127.0.0.1:{fake.port}",
                  SLUICE_TLS_CERT=str(own))
    try:
        r = run([str(sendmail_link), "-f", "app@shop.test", "a@dest.test"], env,
                b"Subject: secret\n\nconfidential\n")
    finally:
        fake.close()
    assert r.returncode == 0, r.stderr
    want = b"after its STARTTLS reply" if mode == "inject" else b"certificate other than"
    assert want in r.stderr, r.stderr
    assert len(outbox(tmp_path)) == 1
    # nothing of the transaction went out, in plaintext or to the wrong server
    assert not any(b"MAIL" in l or b"AUTH" in l or b"confidential" in l for l in fake.seen)


def test_non_ascii_recipient_goes_with_smtputf8(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY).start()
    r = run([str(sendmail_link), "-f", "app@shop.test", "jürgen@dest.test"], env_for(s, tmp_path),
            "Subject: Grüße\n\nHallo\n".encode())
    assert r.returncode == 0, r.stderr
    m = s.wait_captured(1)[0]
    assert m["envelope"]["rcpt_to"] == ["jürgen@dest.test"] and m["envelope"]["smtputf8"]


class Picky:
    """A relay that answers 450 to one recipient and takes the rest."""

    def __init__(self):
        self.got = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("later@"):
            return "450 4.2.1 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.got.append(list(envelope.rcpt_tos))
        return "250 OK"


def test_recipients_deferred_alone_are_kept_alone(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY)
    picky = Picky()
    port = free_port()
    ctl = Controller(picky, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        env = env_for(s, tmp_path, SLUICE_SENDMAIL_SERVER=f"127.0.0.1:{port}")
        r = run([str(sendmail_link), "-f", "app@shop.test", "now@dest.test", "later@dest.test"],
                env, b"Subject: split\n\nx\n")
    finally:
        ctl.stop()
    assert r.returncode == 0, r.stderr
    assert picky.got == [["now@dest.test"]]
    files = outbox(tmp_path)
    assert len(files) == 1
    assert b"rcpt later@dest.test\n" in files[0].read_bytes()
    assert b"rcpt now@dest.test" not in files[0].read_bytes()
    s.start()
    r = run([BIN, "outbox", "flush"], env_for(s, tmp_path))
    assert r.returncode == 0 and b"1 sent" in r.stdout
    assert s.wait_captured(1)[0]["envelope"]["rcpt_to"] == ["later@dest.test"]


def test_options_after_recipients_and_after_double_dash(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY).start()
    env = env_for(s, tmp_path)
    r = run([str(sendmail_link), "a@dest.test", "-f", "app@shop.test", "-oi", "--", "-b@dest.test"],
            env, b"Subject: order\n\n.\nstill text\n")
    assert r.returncode == 0, r.stderr
    m = s.wait_captured(1)[0]
    assert m["envelope"]["mail_from"] == "app@shop.test"
    assert m["envelope"]["rcpt_to"] == ["a@dest.test", "-b@dest.test"]
    assert b"still text" in m["data"]


def test_sender_forms(make_sluice, tmp_path, sendmail_link):
    s = make_sluice(config_text=RELAY).start()
    env = env_for(s, tmp_path)
    r = run([str(sendmail_link), "-f", "root", "a@dest.test"], env, b"Subject: 1\n\nx\n")
    assert r.returncode == 0, r.stderr
    r = run([str(sendmail_link), "-f", "<>", "a@dest.test"], env, b"Subject: 2\n\nx\n")
    assert r.returncode == 0, r.stderr
    r = run([str(sendmail_link), "-f", "a b@x", "a@dest.test"], env, b"Subject: 3\n\nx\n")
    assert r.returncode == 64 and b"not an address" in r.stderr
    got = s.wait_captured(2)
    assert [g["envelope"]["mail_from"] for g in got] == ["root@relay.test", ""]
