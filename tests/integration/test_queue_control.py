"""Queue control, black box: paged and streamed listings over the control
socket while SMTP sessions go on, and the operator verbs (retry, release,
show) against a real upstream (tests/support/upstream.py)."""
import json
import smtplib
import socket
import threading
import time

from conftest import wait_for

BASE = """
[server]
relay_networks = 127.0.0.1/32
[queue]
retry_base = 1h
retry_cap = 1h
"""

FAST = BASE.replace("retry_base = 1h\nretry_cap = 1h", "retry_base = 1s\nretry_cap = 2s")


def upstream_section(port):
    return (f"\n[upstream main]\nhost = 127.0.0.1\nport = {port}\ntls = none\nverify = none\n"
            "timeout = 5s\nconnect_timeout = 3s\n")


def send(s, n, tag, rcpts=("to@dest.test",), sender="app@shop.test"):
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        for i in range(n):
            msg = (f"From: {sender or 'x@shop.test'}\r\nTo: {rcpts[0]}\r\nSubject: {tag} {i}\r\n"
                   f"Message-ID: <{tag}-{i}@shop.test>\r\n\r\nbody {i}\r\n")
            c.sendmail(sender, list(rcpts), msg.encode())


def fill(s, n, clients=4):
    """n messages over a few parallel sessions (each waits for the group commit)."""
    per = n // clients
    ts = [threading.Thread(target=send, args=(s, per, f"fill{k}")) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per * clients


def stats(s):
    r = s.queue("stats")
    assert r["ok"], r
    return r["data"]


def control_request(s, line):
    """Sends one raw request line; returns the connected socket."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(s.var / "control.sock"))
    c.sendall(line.encode() + b"\n")
    return c


def read_all(c):
    chunks = []
    while True:
        b = c.recv(65536)
        if not b:
            break
        chunks.append(b)
    c.close()
    return b"".join(chunks)


def held_relay(make_sluice, make_upstream, n):
    """A relay with n messages held by the operator (the upstream greets 421,
    so nothing is delivered meanwhile)."""
    up = make_upstream()
    up.set("down")
    s = make_sluice(config_text=BASE + upstream_section(up.port)).start()
    total = fill(s, n)
    wait_for(lambda: stats(s)["messages"] == total, timeout=60, what="messages spooled")
    # every message has had its first attempt (and waits an hour) before the hold
    wait_for(lambda: stats(s)["inflight"] == 0 and stats(s)["deferred"] >= total, timeout=60,
             what="first attempts done")
    return s, up, total


def list_page(s, *args):
    r = s.queue("list", *args)
    assert r["ok"], r
    return r


def test_paging_has_no_gaps_duplicates_or_disorder(make_sluice, make_upstream):
    s, up, total = held_relay(make_sluice, make_upstream, 2400)
    # the default page is bounded and says where the next one starts
    first = list_page(s)
    assert len(first["data"]) == 1000 and first["count"] == 1000
    assert first["next"] == first["data"][-1]["id"]
    seen, cursor, pages = [], None, 0
    while True:
        args = ["--limit", "700"] + (["--after", cursor] if cursor else [])
        page = list_page(s, *args)
        pages += 1
        ids = [m["id"] for m in page["data"]]
        assert ids == sorted(ids)
        assert not cursor or ids == [] or ids[0] > cursor
        seen += ids
        cursor = page["next"]
        if cursor is None:
            break
        assert cursor == ids[-1]
        assert pages < 10, "the cursor does not advance"
    assert pages == 4  # 700 + 700 + 700 + 300
    assert len(seen) == total and len(set(seen)) == total
    # --limit 0 streams the whole queue in one reply, in the same order
    whole = list_page(s, "--limit", "0")
    assert [m["id"] for m in whole["data"]] == seen and whole["next"] is None
    # the state filter pages too: hold every third message, list the held ones
    held = seen[::3]
    for i in held[:60]:
        assert s.queue("hold", i)["ok"]
    p1 = list_page(s, "--state", "held", "--limit", "50")
    p2 = list_page(s, "--state", "held", "--limit", "50", "--after", p1["next"])
    got = [m["id"] for m in p1["data"] + p2["data"]]
    assert got == held[:60] and p2["next"] is None
    assert all(m["state"] == "held" for m in p1["data"] + p2["data"])
    # people get the cursor as a command line
    human = s.cli("queue", "list", "--state", "held", "--limit", "50").stdout
    assert "50 message(s)" in human
    assert f"more: sluice queue list --state held --after {p1['next']}" in human
    bad = s.cli("queue", "list", "--after", "12", check=False)
    assert bad.returncode == 2 and "16 hex" in bad.stderr


def test_ehlo_answered_while_full_listings_stream(make_sluice, make_upstream):
    s, up, total = held_relay(make_sluice, make_upstream, 4000)
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as smtp:
        smtp.ehlo("warm.example")
        # eight whole-queue listings at once, each read slowly
        conns = [control_request(s, "list limit=0") for _ in range(8)]
        results = [None] * len(conns)
        first_bytes = threading.Event()

        def slow_reader(k):
            c, chunks = conns[k], []
            while True:
                b = c.recv(4096)
                if not b:
                    break
                chunks.append(b)
                first_bytes.set()
                time.sleep(0.002)
            c.close()
            results[k] = b"".join(chunks)

        readers = [threading.Thread(target=slow_reader, args=(k,)) for k in range(len(conns))]
        for t in readers:
            t.start()
        assert first_bytes.wait(10)
        worst, probes = 0.0, 0
        while any(t.is_alive() for t in readers) and probes < 200:
            t0 = time.monotonic()
            code, _ = smtp.ehlo("probe.example")
            worst = max(worst, time.monotonic() - t0)
            assert code == 250
            probes += 1
        listing_running = any(t.is_alive() for t in readers)
        for t in readers:
            t.join(60)
    # the sessions were answered while the listings were still streaming
    assert probes >= 5, f"only {probes} EHLO answered during the listings"
    assert worst < 0.5, f"an EHLO waited {worst:.3f} s behind the listings"
    assert listing_running or probes >= 5
    for raw in results:
        doc = json.loads(raw)
        assert doc["ok"] and doc["count"] == total and doc["next"] is None
        assert len({m["id"] for m in doc["data"]}) == total


def test_slow_listing_client_holds_no_whole_listing(make_sluice, make_upstream):
    s, up, total = held_relay(make_sluice, make_upstream, 2000)
    c = control_request(s, "list limit=0")
    head = c.recv(64)
    assert head.startswith(b'{"ok":true,"data":[')
    # the daemon refills the stream only as it drains: a client that stops
    # reading leaves the daemon serving others (stats answers at once)
    t0 = time.monotonic()
    assert stats(s)["messages"] == total
    assert time.monotonic() - t0 < 2
    rest = read_all(c)
    doc = json.loads(head + rest)
    assert doc["count"] == total


def test_retry_all_revives_deferred_and_held_never_dead(make_sluice, make_upstream):
    up = make_upstream("--rcpt-reply", "bad@dest.test=550 5.1.1 no such user",
                       "--rcpt-reply", "later@dest.test=451 4.2.0 try later")
    up.set("down")
    s = make_sluice(config_text=BASE + upstream_section(up.port)).start()
    send(s, 2, "ra")
    send(s, 1, "rlater", rcpts=("later@dest.test",))
    send(s, 1, "rbad", rcpts=("bad@dest.test",))
    wait_for(lambda: stats(s)["deferred"] >= 4, what="first attempts deferred")
    ids = [m["id"] for m in list_page(s)["data"]]
    assert len(ids) == 4
    later_id, bad_id = ids[2], ids[3]

    def rcpts_for(addr):
        return [e for e in up.events() if e.get("event") == "command" and
                e.get("verb") == "RCPT" and addr in json.dumps(e)]

    # two held by the operator: the upstream's recovery leaves them alone
    for i in ids[:2]:
        assert s.queue("hold", i)["ok"]
    # the upstream is back: the dead letter is refused for good, and the
    # recovery re-attempts the other one, whose recipient defers it an hour
    up.clear("down")
    assert s.queue("retry", bad_id)["ok"]
    wait_for(lambda: s.events("queue.dead"), what="dead letter")
    wait_for(lambda: len(up.messages()) == 1, what="the bounce delivered")
    assert up.messages()[0]["rcpt_tos"] == ["app@shop.test"]
    wait_for(lambda: len(rcpts_for("later@dest.test")) == 1, what="the 451 re-attempted")
    wait_for(lambda: any(m["id"] == later_id and m["attempts"] >= 1
                         for m in list_page(s)["data"]) and stats(s)["deferred"] >= 5,
             what="the 451 deferred")
    # retry --all: the deferred one and the held two now, the dead letter stays dead
    r = s.queue("retry", "--all")
    assert r["ok"] and r["data"]["messages"] == 3, r
    wait_for(lambda: len(up.messages()) == 3, what="the held two delivered")
    wait_for(lambda: len(rcpts_for("later@dest.test")) == 2, what="the deferred one re-attempted")
    delivered = [m for m in up.messages() if m["mail_from"] == "app@shop.test"]
    assert len(delivered) == 2
    dead = s.queue("dead")["data"]
    assert [m["id"] for m in dead] == [bad_id]
    assert len(s.events("queue.bounce")) == 1
    # --dead re-sends the dead letter too; failing again, it bounces no second time
    n_bad = len(rcpts_for("bad@dest.test"))
    r = s.queue("retry", "--all", "--dead")
    assert r["ok"] and r["data"]["messages"] == 2, r
    wait_for(lambda: len(s.events("queue.dead")) == 2, what="dead again")
    assert len(rcpts_for("bad@dest.test")) > n_bad  # it was really re-sent
    assert len(s.events("queue.bounce")) == 1
    assert stats(s)["bounces"] == 1
    assert len(up.messages()) == 3  # no second DSN reached the sender


def test_release_all_releases_every_held_message(make_sluice, make_upstream):
    # one message deferred by its recipient (451), not by upstream trouble,
    # so the upstream's recovery does not re-attempt it: it waits an hour
    up = make_upstream("--rcpt-reply", "later@dest.test=451 4.2.0 try later")
    up.set("down")
    s = make_sluice(config_text=BASE + upstream_section(up.port)).start()
    send(s, 3, "rel")
    send(s, 1, "later", rcpts=("later@dest.test",))
    wait_for(lambda: stats(s)["deferred"] >= 4, what="deferred")
    ids = [m["id"] for m in list_page(s)["data"]]
    later_id = ids[3]
    for i in ids[:3]:
        assert s.queue("hold", i)["ok"]
    assert stats(s)["held"] == 3
    up.clear("down")
    # the upstream's recovery re-attempts the one deferred by the outage; its
    # recipient now defers it an hour (451), which no release touches
    assert s.queue("retry", later_id)["ok"]
    wait_for(lambda: stats(s)["deferred"] >= 5, what="the 451 deferred")
    r = s.queue("release", "--all")
    assert r["ok"] and r["data"]["messages"] == 3
    wait_for(lambda: len(up.messages()) == 3, what="the released three delivered")
    # the one never held was not touched: it still waits for its retry time
    left = list_page(s)["data"]
    assert [m["id"] for m in left] == [later_id] and left[0]["state"] == "active"
    bad = s.cli("queue", "release", check=False)
    assert bad.returncode == 2 and "--all" in bad.stderr


def test_show_includes_the_upstreams_last_reply(make_sluice, make_upstream):
    up = make_upstream("--rcpt-reply", "bad@dest.test=550 5.1.1 no such user here")
    up.set("data-reply", "451 4.3.0 greylisted, try later")
    s = make_sluice(config_text=FAST + upstream_section(up.port)).start()
    send(s, 1, "defer")
    wait_for(lambda: s.events("queue.deferred"), what="deferral")
    mid = list_page(s)["data"][0]["id"]
    shown = s.queue("show", mid)["data"]
    assert "451 4.3.0 greylisted" in shown["upstream_reply"]
    # an operator hold replaces the status text but keeps the upstream's words
    assert s.queue("hold", mid)["ok"]
    shown = s.queue("show", mid)["data"]
    assert shown["state"] == "held" and shown["last_reply"].startswith("held by operator")
    assert "451 4.3.0 greylisted" in shown["upstream_reply"]
    human = s.cli("queue", "show", mid).stdout
    assert "upstream reply: 451 4.3.0 greylisted" in human
    assert s.queue("delete", mid)["ok"]
    # a dead letter shows the permanent reply, not just "failed permanently"
    up.clear("data-reply")
    send(s, 1, "perm", rcpts=("bad@dest.test",))
    wait_for(lambda: s.queue("dead")["data"], what="dead letter")
    dead = s.queue("dead")["data"][0]
    shown = s.queue("show", dead["id"])["data"]
    assert shown["state"] == "dead"
    assert "550 5.1.1 no such user here" in shown["upstream_reply"]
    assert s.queue("show", "0000000000000001")["ok"] is False
