"""Scheduler, black box: a large due backlog against a refused upstream, the
release of deferred mail when an upstream recovers, and wall-clock steps."""
import os
import resource
import smtplib
import threading

import pytest

from conftest import free_port, wait_for

# A main-thread stack this small overflows after a few hundred nested
# attempt completions; a scheduler that never nests them needs far less.
SMALL_STACK = 256 * 1024


def small_stack():
    resource.setrlimit(resource.RLIMIT_STACK, (SMALL_STACK, resource.RLIM_INFINITY))


def relay_conf(port, retry_base="1s", retry_cap="2s", extra=""):
    return f"""
[server]
relay_networks = 127.0.0.1/32
[queue]
retry_base = {retry_base}
retry_cap = {retry_cap}
{extra}
[upstream main]
host = 127.0.0.1
port = {port}
tls = none
verify = none
timeout = 5s
connect_timeout = 3s
"""


def send_many(s, n, threads=4, tag="b"):
    """Sends n one-recipient messages over a few parallel sessions; returns
    their Message-IDs."""
    mids = [f"{tag}-{i}@shop.test" for i in range(n)]
    errors = []

    def run(part):
        try:
            with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
                for mid in part:
                    c.sendmail("app@shop.test", ["to@dest.test"],
                               (f"From: app@shop.test\r\nTo: to@dest.test\r\nSubject: {mid}\r\n"
                                f"Message-ID: <{mid}>\r\n\r\nbody\r\n").encode())
        except (smtplib.SMTPException, OSError) as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(mids[k::threads],)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    return mids


def deferred_ids(s):
    return {e["id"] for e in s.events("queue.deferred", since_start=True)}


def test_large_due_backlog_with_refused_upstream_does_not_crash(make_sluice):
    n = 1500
    s = make_sluice(config_text=relay_conf(free_port()))
    s.start(preexec_fn=small_stack)
    send_many(s, n)
    wait_for(lambda: s.proc.poll() is not None or len(deferred_ids(s)) >= n, timeout=60,
             what="every message deferred once")
    assert s.proc.poll() is None, f"daemon died with {s.proc.returncode}"
    assert s.stop() == 0
    # after a restart every message is past its retry time: all due at once
    s.start(preexec_fn=small_stack)
    wait_for(lambda: s.proc.poll() is not None or len(deferred_ids(s)) >= n, timeout=60,
             what="every message attempted after the restart")
    assert s.proc.poll() is None, f"daemon died with {s.proc.returncode}"
    assert s.stop() == 0


def test_recovered_upstream_releases_deferred_mail_at_once(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")  # greets with 421 and closes: the upstream's trouble
    # a long retry: without the release on recovery the mail would wait ~hours
    s = make_sluice(config_text=relay_conf(up.port, retry_base="2h", retry_cap="4h")).start()
    n = 30
    send_many(s, n, tag="rec")
    wait_for(lambda: len(deferred_ids(s)) >= n, what="every message deferred")
    retry_in = [e["retry_in"] for e in s.events("queue.deferred")]
    assert min(retry_in) >= 1 and max(retry_in) > 60  # they really wait long
    up.clear("down")
    # the next probe (at most a few seconds away this early) finds it healthy
    wait_for(lambda: len(up.messages()) >= n, timeout=30, what="delivery without flush")
    assert s.events("upstream_healthy")
    rel = s.events("queue.released_on_recovery")
    assert rel and sum(e["deferred"] for e in rel) >= 1
    wait_for(lambda: s.queue("list")["data"] == [], what="queue empty")
    assert s.queue("stats")["data"]["bounces"] == 0


def test_recovery_release_does_not_starve_new_mail(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")
    s = make_sluice(config_text=relay_conf(up.port, retry_base="2h", retry_cap="4h",
                                           extra="")).start()
    backlog = 1500
    send_many(s, backlog, tag="old")
    wait_for(lambda: len(deferred_ids(s)) >= backlog, timeout=60, what="backlog deferred")
    up.clear("down")
    wait_for(lambda: s.events("queue.released_on_recovery"), timeout=30, what="release")
    # new mail submitted while the backlog drains goes out ahead of its tail
    fresh = send_many(s, 5, threads=1, tag="new")
    wait_for(lambda: len(up.messages()) >= backlog + 5, timeout=120, what="everything delivered")
    order = [m["data"].split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
             for m in up.messages()]
    last_new = max(order.index(mid) for mid in fresh)
    assert last_new < len(order) - 100, f"new mail delivered at {last_new} of {len(order)}"


# libfaketime moves the wall clock of the daemon only (CLOCK_MONOTONIC stays
# real, as in a real clock step); the offset file is re-read at every call.
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def faketime_sluice(make_sluice, tmp_path, port):
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    s = make_sluice(config_text=relay_conf(port), env={
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        # an ASan daemon accepts a preloaded library ahead of its runtime
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0",
    })
    return s, offset


def deferrals(s):
    return len(s.events("queue.deferred"))


@pytest.mark.skipif(not os.path.exists(FAKETIME_LIB), reason="faketime is not installed")
@pytest.mark.parametrize("step", ["+6d", "-1d"])
def test_wall_clock_step_neither_expires_nor_postpones(make_sluice, make_upstream, tmp_path, step):
    up = make_upstream()
    up.set("data-reply", "451 4.3.0 try again later")  # the message's trouble: lifetime applies
    s, offset = faketime_sluice(make_sluice, tmp_path, up.port)
    s.start()
    mids = send_many(s, 5, threads=1, tag="clk")
    wait_for(lambda: len(deferred_ids(s)) >= 5, what="first deferrals")
    offset.write_text(step + "\n")
    before = deferrals(s)
    # retries keep coming every 1-2 s: +6 days does not expire the 5 s old
    # mail (max_lifetime 5 days), -1 day does not postpone them by a day
    wait_for(lambda: deferrals(s) >= before + 10 or s.events("queue.bounce"), timeout=20,
             what="retries after the step")
    assert not s.events("queue.bounce") and not s.events("queue.dead")
    steps = s.events("queue.clock_step")
    want = 6 * 86400 if step == "+6d" else -86400
    assert steps and abs(steps[0]["step_s"] - want) < 60, steps
    up.clear("data-reply")
    wait_for(lambda: len(up.messages()) >= 5, timeout=20, what="delivery")
    assert sorted(m["data"].split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
                  for m in up.messages()) == sorted(mids)
    assert s.queue("stats")["data"]["bounces"] == 0


def test_one_ambiguous_drop_affects_only_that_message(make_sluice, make_upstream):
    """A connection dropped after the final "." (no reply) leaves that one
    message's fate unknown; the upstream stays healthy and the other
    messages are neither failed nor told they may be duplicated."""
    up = make_upstream()
    up.set("drop-dot-once")
    s = make_sluice(config_text=relay_conf(up.port)).start()
    mids = send_many(s, 40, threads=4, tag="amb")

    def delivered_mids():
        return {m["data"].split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
                for m in up.messages()}

    wait_for(lambda: delivered_mids() == set(mids), timeout=30, what="all 40 delivered")
    unknown = s.events("upstream.outcome_unknown")
    assert len(unknown) == 1, unknown
    deferred = s.events("queue.deferred")
    assert len(deferred) == 1, deferred
    assert "may duplicate" in deferred[0]["reason"]
    assert not s.events("upstream_unhealthy")
    assert not s.events("upstream.connection_failed")
    assert s.queue("stats")["data"]["bounces"] == 0


def test_a_burst_of_failed_connections_is_one_outage(make_sluice, make_upstream):
    """The upstream goes away while the relay believes it healthy: the
    connections it opens together for the waiting mail fail together (here
    a slow 421 greeting makes sure they are all open at once). That is one
    outage, not many: the next probe stays a second or two away, so the mail
    leaves soon after the upstream is back (retry_base 2h: without the probe
    it would wait for hours)."""
    up = make_upstream()
    s = make_sluice(config_text=relay_conf(up.port, retry_base="2h", retry_cap="4h",
                                           extra="")).start()
    send_many(s, 40, threads=8, tag="warm")
    wait_for(lambda: len(up.messages()) >= 40, what="warm-up delivered")
    port = up.port
    up.stop()  # the pooled connections see the end
    back = make_upstream("--port", str(port), name="back")
    back.set("down", "1")
    n = 200
    send_many(s, n, threads=16, tag="burst")
    wait_for(lambda: len(deferred_ids(s)) >= n, timeout=60, what="every message deferred")
    failed = len(s.events("upstream.connection_failed"))
    assert failed >= 4, f"only {failed} connections failed: no burst to test"
    back.clear("down")
    wait_for(lambda: len(back.messages()) >= n, timeout=20, what="delivery soon after recovery")
    assert len(s.events("upstream_healthy")) >= 1
