"""The first minutes with the embedded defaults: a capture-only relay lets
loopback send without AUTH (a mail catcher); a real upstream or an explicit
relay_networks takes that away; `serve` says on start where it listens,
where mail goes, which certificate to trust and how to add a credential; the
self-signed certificate follows the configured hostname."""
import ssl
import subprocess

from conftest import wait_for
from support_smtp import Conn, message, new_msgid

FROM_AUTO = "SLUICE_SERVER_RELAY_NETWORKS"


def defaults(make_sluice, name="relay", **kw):
    """A relay with the embedded relay_networks default (auto)."""
    s = make_sluice(name, **kw)
    s.env.pop(FROM_AUTO, None)
    return s


def test_capture_only_lets_loopback_send_without_auth(make_sluice):
    s = defaults(make_sluice).start()
    assert s.events("server.ready")[0]["without_auth"] == "127.0.0.0/8,::1/128"
    msgid = new_msgid()
    for source in ("127.0.0.1", "127.0.0.9"):
        with Conn(s.port, source=source) as c:
            c.ehlo()
            r = c.send_message(message(msgid), sender="app@example.com", rcpts=["qa@example.net"])
            assert r.code == 250, str(r)
    msgs = s.wait_captured(2)
    assert all(m["envelope"]["mail_from"] == "app@example.com" for m in msgs)


def test_a_real_upstream_requires_auth_again(make_sluice, make_upstream):
    up = make_upstream()
    conf = f"[upstream main]\nhost = 127.0.0.1\nport = {up.port}\ntls = none\nverify = none\n"
    s = defaults(make_sluice, config_text=conf).start()
    assert s.events("server.ready")[0]["without_auth"] == ""
    with Conn(s.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<app@example.com>", 530, "5.7.0")


def test_explicit_relay_networks_wins_in_capture_mode(make_sluice):
    s = make_sluice(env={FROM_AUTO: ""}).start()  # capture only, but nobody trusted
    with Conn(s.port) as c:
        c.ehlo()
        c.expect("MAIL FROM:<app@example.com>", 530, "5.7.0")
    s.stop()
    s.env[FROM_AUTO] = "127.0.0.5/32"
    s.start()
    with Conn(s.port, source="127.0.0.1") as c:
        c.ehlo()
        c.expect("MAIL FROM:<app@example.com>", 530, "5.7.0")
    with Conn(s.port, source="127.0.0.5") as c:
        c.ehlo()
        c.expect("MAIL FROM:<app@example.com>", 250, "2.1.0")


def test_serve_says_where_it_listens_and_where_mail_goes(make_sluice):
    s = defaults(make_sluice).start()
    text = s.log_text()
    assert f"127.0.0.1:{s.port}" in text and f"127.0.0.1:{s.tls_port}" in text
    assert str((s.var / "capture").resolve()) in text
    assert str((s.var / "tls" / "cert.pem").resolve()) in text
    assert "creds add NAME --password" in text
    assert "127.0.0.0/8,::1/128" in text
    assert f"swaks --server 127.0.0.1:{s.port}" in text


def cert_names(path):
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    return out


def test_self_signed_certificate_follows_the_hostname(make_sluice):
    s = make_sluice().start()
    cert = s.var / "tls" / "cert.pem"
    names = cert_names(cert)
    assert "DNS:relay.test" in names and "IP Address:127.0.0.1" in names, names
    # a client that verifies the name against the relay's own file
    ctx = ssl.create_default_context(cafile=str(cert))
    with Conn(s.port) as c:
        c.ehlo()
        c.expect("STARTTLS", 220)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="relay.test")
        c.ehlo()
    s.stop()
    s.env["SLUICE_SERVER_HOSTNAME"] = "mail.shop.test"
    s.start()
    assert s.events("tls.selfsigned_renewed", since_start=True)
    assert "DNS:mail.shop.test" in cert_names(cert)
    ctx = ssl.create_default_context(cafile=str(cert))
    with Conn(s.port) as c:
        c.ehlo("client.test")
        c.expect("STARTTLS", 220)
        c.sock = ctx.wrap_socket(c.sock, server_hostname="mail.shop.test")
        c.ehlo()
    # unchanged hostname: the certificate stays as it is
    before = cert.read_bytes()
    s.stop()
    s.start()
    assert cert.read_bytes() == before
    assert not s.events("tls.selfsigned_renewed", since_start=True)


def test_an_operators_certificate_is_never_replaced(make_sluice, tmp_path):
    s = make_sluice()
    tls = s.var / "tls"
    tls.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/O=Example/CN=other.test",
                    "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"), "-days", "30"],
                   capture_output=True, check=True)
    before = (tls / "cert.pem").read_bytes()
    s.start()
    wait_for(lambda: s.events("server.ready"), what="server.ready")
    assert (tls / "cert.pem").read_bytes() == before
    assert not s.events("tls.selfsigned_renewed")
