"""The daemon around the SMTP sessions, seen from outside: the durability
contract of "250 queued as ID", stopping on SIGTERM (drain, finish DATA in
flight), reloading on SIGHUP, configuration errors, and a full disk."""
import errno
import signal
import subprocess
import time

import pytest

from conftest import RELAY_NET_SOURCE, free_port, wait_for
from support_smtp import (CaptureWatch, Conn, dot_stuff, message, new_msgid, open_session,
                          queued_id, wait_captured_id)

OPEN = {"SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32"}


def unreachable_upstream():
    """Config text for an SMTP upstream nobody listens on: messages stay queued."""
    return (f"[upstream down]\nkind = smtp\nhost = 127.0.0.1\nport = {free_port()}\n"
            "tls = none\nverify = none\n")


# ---- durability ----

def test_queued_id_is_visible_right_after_250(shared_sluice):
    s = shared_sluice
    for _ in range(5):
        msgid = new_msgid()
        with open_session(s, auth=False) as c:
            qid = queued_id(c.send_message(message(msgid)))
            q = s.queue("show", qid)  # before anything else happens
            cap = s.var / "capture" / f"{qid}.eml"
            assert (q.get("ok") and q["data"]["id"] == qid) or cap.exists(), q
        m = wait_captured_id(s, msgid)
        assert m["envelope"]["queue_id"] == qid


def test_250_survives_kill9(make_sluice):
    s = make_sluice(env=OPEN, config_text=unreachable_upstream()).start()
    msgid = new_msgid()
    with open_session(s, auth=False) as c:
        qid = queued_id(c.send_message(message(msgid)))
    q = s.queue("show", qid)
    assert q["ok"] and q["data"]["meta"]["message_id"] == msgid, q
    s.kill9()  # no chance to flush anything after the 250
    s.start()
    q = s.queue("show", qid)
    assert q["ok"] and q["data"]["sender"] == "app@sender.test", q
    assert [r["address"] for r in q["data"]["recipients"]] == ["rcpt@example.net"]


# ---- SIGTERM ----

def test_sigterm_closes_idle_sessions_and_exits(make_sluice):
    s = make_sluice(env={**OPEN, "SLUICE_SERVER_SHUTDOWN_GRACE": "5s"}).start()
    greeted = Conn(s.port)
    ready = Conn(s.port, source=RELAY_NET_SOURCE)
    ready.ehlo()
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    for c in (greeted, ready):
        r = c.reply()
        assert (r.code, r.enhanced) == (421, "4.3.2"), str(r)
        assert c.closed()
        c.close()
    assert s.proc.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 5
    assert s.events("server.stopped")
    s.stop()


def test_sigterm_lets_data_in_progress_finish(make_sluice):
    s = make_sluice(env={**OPEN, "SLUICE_SERVER_SHUTDOWN_GRACE": "10s"}).start()
    msgid = new_msgid()
    wire = dot_stuff(message(msgid, body=b"line\r\n" * 200))
    c = open_session(s, auth=False)
    c.expect("MAIL FROM:<app@sender.test>", 250)
    c.expect("RCPT TO:<rcpt@example.net>", 250)
    c.expect("DATA", 354)
    c.send(wire[:500])
    s.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: s.events("server.stopping", since_start=True), 5, "server.stopping")
    # no new sessions while draining
    with pytest.raises(OSError):
        Conn(s.port, timeout=2)
    assert s.proc.poll() is None
    c.send(wire[500:] + b".\r\n")
    r = c.reply()
    assert r.code == 250 and r.enhanced == "2.0.0", str(r)
    qid = queued_id(r)
    r = c.reply()
    assert (r.code, r.enhanced) == (421, "4.3.2"), str(r)
    assert c.closed()
    c.close()
    assert s.proc.wait(timeout=10) == 0
    s.stop()
    # what was acknowledged is delivered, now or after the restart
    s.start()
    m = wait_captured_id(s, msgid)
    assert m["envelope"]["queue_id"] == qid


# ---- SIGHUP and configuration ----

def test_sighup_loads_new_users(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    s.add_user("app")
    s.start()
    s.add_user("bob", "bob's new password")
    n = len(s.events("server.reloaded"))
    s.hup()
    wait_for(lambda: len(s.events("server.reloaded")) > n, 5, "server.reloaded")
    msgid = new_msgid()
    with Conn(s.port) as c:
        c.ehlo()
        c.login("bob", "bob's new password")
        r = c.send_message(message(msgid))
        assert r.code == 250, str(r)
    assert wait_captured_id(s, msgid)["envelope"]["meta"]["auth"] == "bob"
    with Conn(s.port) as c:  # the old user is still there
        c.ehlo()
        c.login("app")


def test_config_check_names_file_and_line(tmp_path, make_sluice):
    s = make_sluice()
    bad = tmp_path / "broken.conf"
    bad.write_text("[server]\nhostname = relay.test\n\n[limits]\nmax_recipients = lots\n")
    r = s.cli("config", "check", str(bad), check=False)
    assert r.returncode != 0
    assert f"{bad}:5:" in r.stdout + r.stderr, r.stdout + r.stderr


def test_sighup_with_broken_config_keeps_running(make_sluice):
    s = make_sluice(env=OPEN, config_text="[limits]\nmax_recipients = 5\n").start()
    cfg = s.dir / "sluice.conf"
    cfg.write_text("[limits]\nmax_recipients = 5\nmax_message_size = huge\n")
    s.hup()
    wait_for(lambda: s.events("server.reload_failed"), 5, "server.reload_failed")
    errs = s.events("config.error")
    assert errs and errs[0]["file"] == str(cfg) and errs[0]["line"] == 3, errs
    msgid = new_msgid()
    with open_session(s, auth=False) as c:
        r = c.send_message(message(msgid))
        assert r.code == 250, str(r)
    wait_captured_id(s, msgid)


# ---- disk full ----

@pytest.fixture
def small_tmpfs(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(path):
    """Writes zeros to path until the file system is full."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        # the last partial block
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def test_disk_full_gives_452_then_recovers(make_sluice, small_tmpfs):
    s = make_sluice(env={**OPEN, "SLUICE_SERVER_SPOOL_DIR": str(small_tmpfs)}).start()
    watch = CaptureWatch(s)
    filler = small_tmpfs / "filler"
    fill(filler)
    full_id = new_msgid()
    with open_session(s, auth=False) as c:
        for _ in range(2):
            r = c.send_message(message(full_id, body=b"x" * 70 + b"\r\n" * 30))
            assert (r.code, r.enhanced) == (452, "4.3.1"), str(r)
        assert s.events("spool.write_failed")
        filler.unlink()
        ok_id = new_msgid()
        r = c.send_message(message(ok_id, body=b"after the disk was freed\r\n"))
        assert r.code == 250 and r.enhanced == "2.0.0", str(r)
    wait_captured_id(s, ok_id)
    watch.assert_only([ok_id])
