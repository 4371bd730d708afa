"""TLS session resumption on the submission listeners: tickets and the
session cache, on both ports and both TLS versions, across a SIGHUP reload
(which builds a new TLS context), and off when configured off."""
import socket
import ssl

import pytest

from conftest import wait_for

CRLF = b"\r\n"


def read_reply(f):
    lines = []
    while True:
        l = f.readline()
        assert l, "connection closed"
        lines.append(l)
        if l[3:4] == b" ":
            return int(l[:3]), lines


def tls_ctx(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def session_round(s, port, implicit, ctx, session=None):
    """One connection: handshake (resuming `session` if given), EHLO, QUIT.
    Returns (reused, session to resume next time)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if implicit:
        t = ctx.wrap_socket(raw, server_hostname="relay.test", session=session)
        f = t.makefile("rb")
        assert read_reply(f)[0] == 220
    else:
        f = raw.makefile("rb")
        assert read_reply(f)[0] == 220
        raw.sendall(b"EHLO client.test" + CRLF)
        assert read_reply(f)[0] == 250
        raw.sendall(b"STARTTLS" + CRLF)
        assert read_reply(f)[0] == 220
        t = ctx.wrap_socket(raw, server_hostname="relay.test", session=session)
        f = t.makefile("rb")
    t.sendall(b"EHLO client.test" + CRLF)
    assert read_reply(f)[0] == 250  # TLS 1.3 tickets arrive after the handshake: read first
    t.sendall(b"QUIT" + CRLF)
    assert read_reply(f)[0] == 221
    reused, sess = t.session_reused, t.session
    t.close()
    return reused, sess


VERSIONS = [pytest.param(ssl.TLSVersion.TLSv1_3, id="tls13"),
            pytest.param(ssl.TLSVersion.TLSv1_2, id="tls12")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
def test_session_resumes(make_sluice, implicit, version):
    s = make_sluice().start()
    port = s.tls_port if implicit else s.port
    ctx = tls_ctx(version)
    reused, sess = session_round(s, port, implicit, ctx)
    assert not reused
    assert sess is not None and sess.has_ticket
    reused, sess2 = session_round(s, port, implicit, ctx, sess)
    assert reused, "the second connection did not resume the first one's session"


@pytest.mark.parametrize("version", VERSIONS)
def test_tickets_survive_a_reload(make_sluice, version):
    s = make_sluice().start()
    ctx = tls_ctx(version)
    _, sess = session_round(s, s.tls_port, True, ctx)
    before = len(s.events("server.reloaded"))
    s.hup()
    wait_for(lambda: len(s.events("server.reloaded")) > before, what="server.reloaded")
    reused, _ = session_round(s, s.tls_port, True, ctx, sess)
    assert reused, "a ticket issued before SIGHUP no longer resumes"


def test_resumption_off(make_sluice):
    s = make_sluice(env={"SLUICE_TLS_SESSION_TICKETS": "false",
                         "SLUICE_TLS_SESSION_CACHE_SIZE": "0"}).start()
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = tls_ctx(version)
        _, sess = session_round(s, s.tls_port, True, ctx)
        reused, _ = session_round(s, s.tls_port, True, ctx, sess)
        assert not reused, version


def test_cache_alone_resumes_tls12(make_sluice):
    """Without tickets a TLS 1.2 client resumes by session id from the cache."""
    s = make_sluice(env={"SLUICE_TLS_SESSION_TICKETS": "false"}).start()
    ctx = tls_ctx(ssl.TLSVersion.TLSv1_2)
    _, sess = session_round(s, s.tls_port, True, ctx)
    assert not sess.has_ticket
    reused, _ = session_round(s, s.tls_port, True, ctx, sess)
    assert reused
