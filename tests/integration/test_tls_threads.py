"""TLS handshakes on handshake threads ([server] threads): the same
submissions with handshakes on the event loop (0), on one thread and on
several, over STARTTLS and implicit TLS, with resumption; a client that
leaves mid-handshake costs nothing; the setting takes auto and refuses
nonsense."""
import smtplib
import socket
import ssl
import threading

import pytest

from conftest import PASSWORD, wait_for


def tls_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def send(s, implicit, i, ctx):
    msg = (f"From: app@shop.example\r\nTo: rcpt@example.net\r\nSubject: t{i}\r\n\r\n"
           f"body {i}\r\n")
    if implicit:
        c = smtplib.SMTP_SSL("127.0.0.1", s.tls_port, context=ctx, timeout=20)
    else:
        c = smtplib.SMTP("127.0.0.1", s.port, timeout=20)
        c.starttls(context=ctx)
    c.login("app", PASSWORD)
    c.sendmail("app@shop.example", ["rcpt@example.net"], msg)
    c.quit()


@pytest.mark.parametrize("threads", ["0", "1", "3"])
def test_submissions_over_both_ports(make_sluice, threads):
    s = make_sluice(env={"SLUICE_SERVER_THREADS": threads})
    s.add_user()
    s.start()
    ready = s.events("server.ready")[-1]
    assert ready["tls_threads"] == int(threads)
    errors = []

    def client(k):
        ctx = tls_ctx()
        try:
            for i in range(5):
                send(s, (k + i) % 2 == 1, k * 100 + i, ctx)
        except Exception as e:  # reported below with the thread's number
            errors.append((k, repr(e)))
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    s.wait_captured(40)
    assert len(s.captured()) == 40


@pytest.mark.parametrize("threads", ["0", "2"])
def test_resumption_works_with_and_without_threads(make_sluice, threads):
    s = make_sluice(env={"SLUICE_SERVER_THREADS": threads}).start()
    ctx = tls_ctx()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known after the handshake
    session = None
    reused = []
    for _ in range(3):
        raw = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
        t = ctx.wrap_socket(raw, server_hostname="relay.test", session=session)
        f = t.makefile("rb")
        assert f.readline().startswith(b"220 ")
        t.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221 ")
        reused.append(t.session_reused)
        session = t.session
        t.close()
    assert reused == [False, True, True]


def test_client_gone_mid_handshake_leaves_threads_serving(make_sluice):
    s = make_sluice(env={"SLUICE_SERVER_THREADS": "2",
                         "SLUICE_LIMITS_MAX_UNAUTH_CONNECTIONS_PER_IP": "100"})
    s.add_user()
    s.start()
    for _ in range(20):
        c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=5)
        c.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello that never ends
        c.close()
    wait_for(lambda: len(s.events("tls.failed")) >= 20, what="20 failed handshakes")
    send(s, True, 1, tls_ctx())
    send(s, False, 2, tls_ctx())
    s.wait_captured(2)


def test_threads_setting(make_sluice):
    s = make_sluice(env={"SLUICE_SERVER_THREADS": "auto"}).start()
    import os
    assert s.events("server.ready")[-1]["tls_threads"] == os.cpu_count()
    s.stop()
    bad = make_sluice(name="bad", env={"SLUICE_SERVER_THREADS": "many"})
    r = bad.cli("config", "check", check=False)
    assert r.returncode != 0
    assert "expected an integer or auto" in (r.stdout + r.stderr)
