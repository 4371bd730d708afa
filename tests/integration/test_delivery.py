"""Delivery engine, black box: Sluice relays to real SMTP servers (aiosmtpd
upstreams from tests/support/upstream.py) that misbehave on purpose."""
import email
import signal
import smtplib
import socket

import pytest

from conftest import free_port, wait_for

BASE = """
[server]
relay_networks = 127.0.0.1/32
[queue]
retry_base = 1s
retry_cap = 2s
"""


def upstream_section(name, port, priority=10, extra=""):
    return (f"\n[upstream {name}]\nhost = 127.0.0.1\nport = {port}\ntls = none\nverify = none\n"
            f"priority = {priority}\ntimeout = 5s\nconnect_timeout = 3s\n{extra}\n")


def tls_section(name, port, certs, extra=""):
    return (f"\n[upstream {name}]\nhost = 127.0.0.1\nport = {port}\ntls = starttls\n"
            f"ca_file = {certs}/ca.pem\ntimeout = 5s\nconnect_timeout = 3s\n{extra}\n")


def send(s, n=1, rcpts=("to@dest.test",), sender="app@shop.test", tag="m"):
    mids = []
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        for i in range(n):
            mid = f"{tag}-{i}@shop.test"
            msg = (f"From: {sender or 'x@shop.test'}\r\nTo: {rcpts[0]}\r\nSubject: {tag} {i}\r\n"
                   f"Message-ID: <{mid}>\r\n\r\nbody {i}\r\n")
            c.sendmail(sender, list(rcpts), msg.encode())
            mids.append(mid)
    return mids


def mids_of(msgs):
    return [email.message_from_bytes(m["data"])["Message-ID"].strip("<>") for m in msgs]


def queue_ids(s, state="all"):
    r = s.queue("list", "--state", state)
    assert r["ok"], r
    return [m["id"] for m in r["data"]]


def test_delivers_to_upstream_and_reuses_connections(make_sluice, make_upstream):
    up = make_upstream()
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    mids = send(s, 20, rcpts=("a@dest.test", "b@dest.test"))
    wait_for(lambda: len(up.messages()) >= 20, what="20 deliveries")
    msgs = up.messages()
    assert sorted(mids_of(msgs)) == sorted(mids)
    assert all(m["rcpt_tos"] == ["a@dest.test", "b@dest.test"] for m in msgs)
    assert all(m["mail_from"] == "app@shop.test" for m in msgs)
    # connections are reused: far fewer connections than messages
    conns = {e["conn"] for e in up.events() if e.get("event") == "connect"} or \
        {m["connection"] for m in msgs}
    assert len(conns) < 20
    wait_for(lambda: queue_ids(s) == [], what="queue empty")


def test_provider_down_then_back_delivers_all_and_bounces_none(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")  # greets with 421 and closes
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    mids = send(s, 5)
    wait_for(lambda: len(s.events("queue.deferred")) >= 5, what="deferrals")
    assert s.events("upstream_unhealthy"), "an upstream_unhealthy event is raised"
    assert len(queue_ids(s, "active")) == 5
    assert up.messages() == []
    up.clear("down")
    wait_for(lambda: len(up.messages()) >= 5, timeout=30, what="delivery after recovery")
    assert sorted(mids_of(up.messages())) == sorted(mids)
    stats = s.queue("stats")["data"]
    assert stats["bounces"] == 0 and stats["failed"] == 0
    assert s.events("upstream_healthy")


def test_connection_refused_fails_over_to_secondary(make_sluice, make_upstream):
    dead_port = free_port()  # nothing listens here
    up = make_upstream()
    cfg = BASE + upstream_section("primary", dead_port, 1) + upstream_section("secondary", up.port, 2)
    s = make_sluice(config_text=cfg).start()
    mids = send(s, 3)
    wait_for(lambda: len(up.messages()) >= 3, what="delivery via secondary")
    assert sorted(mids_of(up.messages())) == sorted(mids)
    ev = s.events("upstream_unhealthy")
    assert ev and ev[0]["upstream"] == "primary"
    delivered = s.events("queue.delivered")
    assert {e["upstream"] for e in delivered} == {"secondary"}


def test_recipient_5xx_bounces_once_others_delivered(make_sluice, make_upstream):
    up = make_upstream("--rcpt-reply", "bad@dest.test=550 5.1.1 no such user")
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    send(s, 1, rcpts=("good@dest.test", "bad@dest.test"), sender="app@shop.test", tag="bnc")
    # the original for good@, and one DSN to the sender
    wait_for(lambda: len(up.messages()) >= 2, what="delivery and DSN")
    msgs = up.messages()
    orig = [m for m in msgs if m["mail_from"] == "app@shop.test"]
    dsn = [m for m in msgs if m["mail_from"] in ("", "<>")]
    assert len(orig) == 1 and orig[0]["rcpt_tos"] == ["good@dest.test"]
    assert len(dsn) == 1 and dsn[0]["rcpt_tos"] == ["app@shop.test"]
    body = dsn[0]["data"].decode()
    assert "multipart/report; report-type=delivery-status" in body
    assert "Final-Recipient: rfc822; bad@dest.test" in body
    assert "Status: 5.1.1" in body and "Action: failed" in body
    assert "Message-ID: <bnc-0@shop.test>" in body  # the original's headers come back
    dead = s.queue("dead")["data"]
    assert len(dead) == 1
    states = {r["address"]: r["state"] for r in dead[0]["recipients"]}
    assert states == {"good@dest.test": "delivered", "bad@dest.test": "failed"}
    # retrying a dead message re-attempts only the failed recipient
    up_msgs = len(up.messages())
    assert s.queue("retry", dead[0]["id"])["ok"]
    wait_for(lambda: len(s.events("queue.dead")) >= 2, what="second failure")
    assert all(m["rcpt_tos"] != ["good@dest.test"] for m in up.messages()[up_msgs:])


def test_null_sender_never_bounced_and_bounces_can_be_off(make_sluice, make_upstream):
    up = make_upstream("--rcpt-reply", "*=550 5.1.1 no such user")
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    send(s, 1, sender="", tag="null")
    wait_for(lambda: s.events("queue.dead"), what="dead letter")
    assert up.messages() == []
    assert s.queue("stats")["data"]["bounces"] == 0
    s.stop()
    s2 = make_sluice("off", config_text=BASE.replace("[queue]", "[queue]\nbounces = false")
                     + upstream_section("main", up.port)).start()
    send(s2, 1, sender="app@shop.test", tag="off")
    wait_for(lambda: s2.events("queue.dead"), what="dead letter")
    assert up.messages() == []


def test_temporary_failures_are_retried_until_delivered(make_sluice, make_upstream):
    up = make_upstream()
    up.set("data-reply", "451 4.3.0 try again later")
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    mids = send(s, 2, tag="tmp")
    wait_for(lambda: len(s.events("queue.deferred")) >= 4, timeout=20, what="two rounds deferred")
    shown = s.queue("show", queue_ids(s)[0])["data"]
    assert shown["attempts"] >= 2 and "451" in shown["last_reply"]
    up.clear("data-reply")
    wait_for(lambda: len(up.messages()) >= 2, timeout=20, what="delivery")
    assert sorted(mids_of(up.messages())) == sorted(mids)
    assert s.queue("stats")["data"]["bounces"] == 0


@pytest.mark.parametrize("reply", ["421 4.3.2 shutting down", "452 4.3.1 mailbox full"])
def test_4xx_at_rcpt_defers(make_sluice, make_upstream, reply):
    up = make_upstream()
    up.set("rcpt-reply", reply)
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    send(s, 1, tag="rcpt4xx")
    wait_for(lambda: s.events("queue.deferred"), what="deferral")
    up.clear("rcpt-reply")
    wait_for(lambda: len(up.messages()) == 1, timeout=20, what="delivery")
    assert s.queue("stats")["data"]["bounces"] == 0


def test_552_at_data_bounces(make_sluice, make_upstream):
    up = make_upstream("--data-reply", "552 5.3.4 message too big for upstream")
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    send(s, 1, tag="big")
    wait_for(lambda: s.events("queue.bounce"), what="bounce")
    assert s.queue("dead")["data"]


def test_wrong_certificate_holds_and_sends_nothing_in_clear(make_sluice, make_upstream, certs):
    up = make_upstream("--tls", "starttls", "--cert", f"{certs}/wrong.pem",
                       "--key", f"{certs}/wrong.key")
    s = make_sluice(config_text=BASE + tls_section("main", up.port, certs)).start()
    send(s, 2, tag="cert")
    wait_for(lambda: len(queue_ids(s, "held")) == 2, what="messages held")
    held = s.queue("list", "--state", "held")["data"]
    assert all("TLS" in m["last_reply"] or "tls" in m["last_reply"] for m in held)
    verbs = {e.get("verb") for e in up.events() if e.get("event") == "command"}
    assert "MAIL" not in verbs and "RCPT" not in verbs and "DATA" not in verbs
    assert up.messages() == []
    assert s.queue("stats")["data"]["bounces"] == 0


def test_expired_password_held_then_delivered_after_fix_and_sighup(
        make_sluice, make_upstream, certs, tmp_path):
    up = make_upstream("--tls", "starttls", "--cert", f"{certs}/server.pem",
                       "--key", f"{certs}/server.key", "--user", "relay", "--password", "new-secret",
                       "--auth-required")
    secret = tmp_path / "secret"
    secret.write_text("old-secret\n")
    secret.chmod(0o600)  # a secret open to others is refused
    cfg = BASE + tls_section("main", up.port, certs,
                             f"auth = plain\nusername = relay\nsecret_file = {secret}")
    s = make_sluice(config_text=cfg).start()
    mids = send(s, 3, tag="pw")
    wait_for(lambda: len(queue_ids(s, "held")) == 3, what="messages held on AUTH failure")
    held = s.queue("list", "--state", "held")["data"]
    assert all(m["last_reply"].startswith("upstream: ") for m in held)
    assert up.messages() == []
    secret.write_text("new-secret\n")
    s.hup()
    wait_for(lambda: len(up.messages()) >= 3, timeout=20, what="delivery after fix")
    assert sorted(mids_of(up.messages())) == sorted(mids)
    assert all(m["auth_user"] == "relay" and m["tls"] for m in up.messages())
    assert s.queue("stats")["data"]["bounces"] == 0


def test_pinned_key_mismatch_holds(make_sluice, make_upstream, certs):
    up = make_upstream("--tls", "starttls", "--cert", f"{certs}/server.pem",
                       "--key", f"{certs}/server.key")
    wrong_pin = (certs / "wrong.pin").read_text().strip()
    s = make_sluice(config_text=BASE + tls_section("main", up.port, certs,
                                                   f"tls_pin_sha256 = {wrong_pin}")).start()
    send(s, 1, tag="pin")
    wait_for(lambda: len(queue_ids(s, "held")) == 1, what="held on pin mismatch")
    assert up.messages() == []


def test_queue_control_commands(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    send(s, 3, tag="ctl")
    wait_for(lambda: len(s.events("queue.deferred")) >= 3, what="deferred")
    ids = queue_ids(s, "active")
    assert len(ids) == 3
    human = s.cli("queue", "list").stdout
    assert all(i in human for i in ids) and "3 message(s)" in human
    assert s.queue("hold", ids[0])["ok"]
    assert queue_ids(s, "held") == [ids[0]]
    assert s.queue("delete", ids[1])["ok"]
    assert ids[1] not in queue_ids(s)
    assert not s.queue("show", ids[1])["ok"]
    bad = s.cli("queue", "show", "nothex", check=False)
    assert bad.returncode != 0 and "16 hex" in bad.stderr
    up.clear("down")
    assert s.queue("flush")["ok"]
    wait_for(lambda: len(up.messages()) == 1, timeout=20, what="active one delivered")
    assert ids[0] in queue_ids(s, "held")  # held stays held
    assert s.queue("release", ids[0])["ok"]
    wait_for(lambda: len(up.messages()) == 2, timeout=20, what="released one delivered")
    wait_for(lambda: queue_ids(s) == [], what="queue empty")


def test_kill9_during_delivery_loses_nothing(make_sluice, make_upstream):
    up = make_upstream()
    up.set("stall", "1")  # each final "." waits a second: deliveries are in flight
    s = make_sluice(config_text=BASE + upstream_section("main", up.port)).start()
    mids = send(s, 30, tag="k9")
    wait_for(lambda: len(up.messages()) >= 3, timeout=20, what="some deliveries")
    s.kill9()
    up.clear("stall")
    s.start()
    wait_for(lambda: set(mids) <= set(mids_of(up.messages())), timeout=30,
             what="every message delivered after restart")
    got = mids_of(up.messages())
    dups = len(got) - len(set(got))
    # only deliveries in flight at the kill may repeat (at most one per connection)
    assert dups <= 10
    wait_for(lambda: queue_ids(s) == [], what="queue empty")
