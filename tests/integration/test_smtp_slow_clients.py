"""Slow and hoarding clients (slowloris): the idle timeouts restart with every
read, so the relay also bounds the whole of a command line, the whole of a
transaction and the content's average rate, and keeps connection slots for
authenticated sessions: anonymous connections have a lower cap in all and per
address, and the oldest of them gives way when that pool is full.

The trickling here is paced with short sleeps on purpose: slowness is what is
under test; every wait for the relay's own reaction polls with a deadline."""
import socket
import time

import pytest

from conftest import RELAY_NET_SOURCE
from support_smtp import CaptureWatch, Conn, message, new_msgid, open_session


def trickle_until_closed(c, chunks, pause=0.25, limit=15):
    """Sends chunks one at a time until the relay answers; returns the reply
    and the seconds it took. Fails when no reply comes within limit."""
    t0 = time.monotonic()
    c.sock.settimeout(pause)
    for chunk in chunks:
        assert time.monotonic() - t0 < limit, "the relay never cut the trickle off"
        try:
            c.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            data = c.sock.recv(4096)
        except TimeoutError:
            continue
        c.buf += data
        break
    c.sock.settimeout(5)
    return c.reply(), time.monotonic() - t0


def byte_by_byte(data, repeat=1000):
    for _ in range(repeat):
        for b in data:
            yield bytes([b])


def test_command_line_trickled_past_the_deadline(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_COMMAND_DEADLINE": "2s",
                         "SLUICE_LIMITS_COMMAND_TIMEOUT": "30s"}).start()
    with Conn(s.port) as c:
        c.ehlo()
        # one octet every 0.25 s: every read is well inside the idle timeout
        r, took = trickle_until_closed(c, byte_by_byte(b"NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
        assert (r.code, r.enhanced) == (421, "4.4.2"), str(r)
        assert "command line" in r.text, str(r)
        assert 1.5 <= took < 6, took
        assert c.closed()
    assert [e for e in s.events("smtp.deadline") if e.get("deadline") == "command line"]


def test_commands_in_time_are_not_cut_off(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_COMMAND_DEADLINE": "2s"}).start()
    with Conn(s.port) as c:
        c.ehlo()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:  # longer than one deadline in all
            c.expect("NOOP", 250)
            time.sleep(0.5)
        c.expect("QUIT", 221)


def test_data_trickled_below_the_minimum_rate(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_DATA_TIMEOUT": "2s",
                         "SLUICE_LIMITS_DATA_MIN_RATE": "1000",
                         "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32"}).start()
    watch = CaptureWatch(s)
    with open_session(s, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        c.expect("RCPT TO:<rcpt@example.net>", 250)
        c.expect("DATA", 354)
        # about 40 octets a second against a floor of 1000
        body = message(new_msgid(), body=b"x" * 4000 + b"\r\n")
        r, took = trickle_until_closed(c, (body[i:i + 10] for i in range(0, len(body), 10)))
        assert (r.code, r.enhanced) == (421, "4.4.2"), str(r)
        assert "minimum data rate" in r.text, str(r)
        assert 1.5 <= took < 6, took
        assert c.closed()
    watch.assert_only([])


def test_transaction_deadline(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_TRANSACTION_DEADLINE": "2s",
                         "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32"}).start()
    with open_session(s, auth=False) as c:
        c.expect("MAIL FROM:<app@sender.test>", 250)
        t0 = time.monotonic()
        # every command is prompt, yet the transaction never ends
        r = None
        while time.monotonic() - t0 < 10:
            r = c.cmd("NOOP")
            if r.code != 250:
                break
            time.sleep(0.3)
        assert (r.code, r.enhanced) == (421, "4.4.2"), str(r)
        assert "transaction" in r.text, str(r)
        assert 1.5 <= time.monotonic() - t0 < 6
        assert c.closed()
        # outside a transaction the same pace is fine
    with open_session(s, auth=False) as c:
        for _ in range(3):
            c.expect("MAIL FROM:<app@sender.test>", 250)
            c.expect("RSET", 250)
            time.sleep(0.8)


@pytest.fixture
def pooled(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
                         "SLUICE_LIMITS_MAX_CONNECTIONS": "8",
                         "SLUICE_LIMITS_MAX_CONNECTIONS_PER_IP": "100",
                         "SLUICE_LIMITS_MAX_UNAUTH_CONNECTIONS": "4",
                         "SLUICE_LIMITS_MAX_UNAUTH_CONNECTIONS_PER_IP": "2"})
    s.add_user("app")
    return s.start()


def greeting(port, source):
    c = Conn(port, source=source, greet=False)
    return c, c.reply()


def test_unauthenticated_connections_capped_per_address(pooled):
    held = []
    try:
        for _ in range(2):
            c, g = greeting(pooled.port, "127.0.0.5")
            assert g.code == 220, str(g)
            held.append(c)
        c, g = greeting(pooled.port, "127.0.0.5")
        assert (g.code, g.enhanced) == (421, "4.7.0"), str(g)
        c.close()
        # once one of them logged in, the address may open another anonymous one
        held[0].ehlo()
        held[0].login()
        c, g = greeting(pooled.port, "127.0.0.5")
        assert g.code == 220, str(g)
        held.append(c)
        reasons = [e.get("reason") for e in pooled.events("connection.refused")]
        assert reasons == ["max_unauth_connections_per_ip"], reasons
    finally:
        for c in held:
            c.close()


def test_anonymous_pool_full_oldest_gives_way_and_authenticated_keep_working(pooled):
    held = []
    try:
        authed = Conn(pooled.port, source="127.0.0.9")
        authed.ehlo()
        authed.login()
        # four idle anonymous connections from different addresses fill the pool
        for i in range(4):
            c, g = greeting(pooled.port, f"127.0.1.{i + 1}")
            assert g.code == 220, str(g)
            held.append(c)
        # a fresh client still gets in: the longest idle anonymous one goes
        fresh, g = greeting(pooled.port, "127.0.2.1")
        assert g.code == 220, str(g)
        r = held[0].reply()
        assert (r.code, r.enhanced) == (421, "4.7.0"), str(r)
        assert held[0].closed()
        assert pooled.events("connection.evicted")
        # and can log in and send
        fresh.ehlo()
        fresh.login()
        msgid = new_msgid()
        assert fresh.send_message(message(msgid)).code == 250
        # the authenticated session was never touched
        authed.expect("NOOP", 250)
        for c in held[1:]:
            c.expect("NOOP", 250)
        fresh.close()
    finally:
        for c in held:
            c.close()
        authed.close()


def test_authenticated_sessions_are_not_limited_by_the_anonymous_cap(pooled):
    held = []
    try:
        # six sessions from one address, logged in one after another: past
        # the anonymous caps (2 per address, 4 in all), within the total
        for _ in range(6):
            c, g = greeting(pooled.port, "127.0.0.7")
            assert g.code == 220, str(g)
            c.ehlo()
            c.login()
            held.append(c)
        for c in held:
            c.expect("NOOP", 250)
        assert not pooled.events("connection.evicted")
        assert not pooled.events("connection.refused")
    finally:
        for c in held:
            c.close()


def raw_tls_connect(port, source="127.0.0.1"):
    """A TCP connection to the implicit-TLS port that starts a handshake
    record and never finishes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(b"\x16\x03\x01\x02\x00")  # a 512-octet handshake record begins
    return sock


def closed_by_peer(sock, within):
    sock.settimeout(within)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_tls_handshake_trickled_past_the_deadline(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_COMMAND_DEADLINE": "2s",
                         "SLUICE_LIMITS_COMMAND_TIMEOUT": "30s"}).start()
    sock = raw_tls_connect(s.tls_port)
    t0 = time.monotonic()
    try:
        for _ in range(60):  # one octet of the record every 0.25 s
            try:
                sock.sendall(b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                break
            if closed_by_peer(sock, 0.25):
                break
        took = time.monotonic() - t0
        assert 1.5 <= took < 6, took
    finally:
        sock.close()


def test_half_open_tls_connections_give_way_too(pooled):
    socks = [raw_tls_connect(pooled.tls_port, f"127.0.3.{i + 1}") for i in range(4)]
    try:
        fresh, g = greeting(pooled.port, "127.0.2.2")
        assert g.code == 220, str(g)
        assert closed_by_peer(socks[0], 5)  # the oldest handshake was dropped
        assert all(not closed_by_peer(x, 0.1) for x in socks[1:])
        fresh.close()
    finally:
        for x in socks:
            x.close()
