"""The spool, black box: bytes damaged in the middle of a segment lose only
the messages they hit (the rest stay queued, the bad bytes are quarantined
and reported); compaction leaves a live backlog of many segments alone; on a
full disk delivery outcomes and bounces are kept until they can be written,
so nothing is delivered twice after a restart and no bounce is lost."""
import smtplib
import struct
from pathlib import Path

from conftest import wait_for
from test_observability import scrape, status
from test_smtp_lifecycle import fill
from test_torture import relay_conf, small_tmpfs  # noqa: F401 (a fixture)

REC_MAGIC = b"SLR1"
REC_HDR = 24


# one attempt, then the mail waits
HOLD = {"SLUICE_QUEUE_RETRY_BASE": "1h", "SLUICE_QUEUE_RETRY_CAP": "1h"}


def send(port, n, size=1000, tag="m", rcpt="r@dest.test", sender="app@shop.test"):
    ids = []
    with smtplib.SMTP("127.0.0.1", port) as c:
        for i in range(n):
            mid = f"{tag}-{i}@shop.test"
            body = (f"From: {sender}\r\nMessage-ID: <{mid}>\r\nSubject: {tag} {i}\r\n\r\n"
                    + ("x" * 70 + "\r\n") * max(1, size // 72))
            c.sendmail(sender, [rcpt], body.encode())
            ids.append(mid)
    return ids


def records(path):
    """(offset, length, type) of each record in a clean segment file."""
    data = path.read_bytes()
    out, off = [], 0
    while off + REC_HDR <= len(data):
        assert data[off:off + 4] == REC_MAGIC, f"not a clean segment at {off}"
        n = struct.unpack_from("<I", data, off + 8)[0]
        out.append((off, REC_HDR + n, data[off + 12]))
        off += REC_HDR + n
    return out


def segments(s):
    return sorted((s.var / "spool").glob("seg-*.log"))


def recovered(s):
    return s.events("spool.recovered", since_start=True)[0]


def test_damage_in_an_old_segment_loses_only_the_damaged_message(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")
    s = make_sluice(config_text=relay_conf(up.port), env=HOLD).start()
    n = 150
    send(s.port, n, tag="dmg")
    wait_for(lambda: len(s.events("queue.deferred")) >= n, 30, "every message deferred once")
    assert s.stop() == 0
    seg = max((p for p in segments(s) if p.stat().st_size > 0), key=lambda p: p.stat().st_size)
    msgs = [r for r in records(seg) if r[2] == 1]
    assert len(msgs) == n
    off, length, _ = msgs[n // 2]  # the middle of the segment
    with open(seg, "r+b") as f:
        f.seek(off + 200)
        b = bytearray(f.read(16))
        f.seek(off + 200)
        f.write(bytes(x ^ 0xA5 for x in b))
    size_before = seg.stat().st_size

    s.start()
    assert recovered(s)["messages"] == n - 1, recovered(s)
    assert seg.stat().st_size == size_before  # nothing cut
    dmg = s.events("spool.damaged", since_start=True)
    assert len(dmg) == 1, dmg
    assert dmg[0]["segment"] == seg.name and dmg[0]["offset"] == off
    assert dmg[0]["length"] == length and dmg[0]["first_seen"] is True
    q = Path(dmg[0]["quarantine"])
    assert q.parent == s.var / "spool" / "quarantine" and q.stat().st_size == length
    m = scrape(s)
    assert m["sluice_spool_damaged_ranges_total"] == 1
    assert m["sluice_spool_damaged_bytes_total"] == length
    # the 149 undamaged messages are really there, and go out once the upstream is back
    assert s.queue("stats")["data"]["messages"] == n - 1
    up.clear("down")
    s.hup()  # a reload retries deferred mail at once
    wait_for(lambda: len(up.messages()) >= n - 1, 60, f"{n - 1} deliveries")
    assert len(up.messages()) == n - 1


def test_compaction_leaves_a_live_backlog_of_many_segments_alone(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")
    s = make_sluice(config_text=relay_conf(up.port),
                    env={**HOLD, "SLUICE_SERVER_SPOOL_SEGMENT_SIZE": "64KiB"}).start()
    n = 48
    send(s.port, n, size=8000, tag="backlog")  # ~390 KiB of mail nobody can take
    wait_for(lambda: len(s.events("queue.deferred")) >= n, 30, "every message deferred once")
    old = [(p.name, p.stat().st_size) for p in segments(s)[:-1]]
    assert len(old) > 4, old
    runs = scrape(s)["sluice_spool_compaction_runs_total"]
    wait_for(lambda: scrape(s)["sluice_spool_compaction_runs_total"] >= runs + 3, 30,
             "three compaction turns")
    m = scrape(s)
    assert m["sluice_spool_compaction_bytes_total"] == 0
    assert [(p.name, p.stat().st_size) for p in segments(s)[:len(old)]] == old


def test_full_disk_keeps_outcomes_and_bounces_until_written(make_sluice, make_upstream,
                                                            small_tmpfs):
    up = make_upstream("--rcpt-reply", "bad@dest.test=550 5.1.1 no such user")
    up.set("down")
    s = make_sluice(config_text=relay_conf(up.port),
                    env={"SLUICE_SERVER_SPOOL_DIR": str(small_tmpfs / "spool")}).start()
    ok = send(s.port, 5, tag="full")
    send(s.port, 1, tag="bounced", rcpt="bad@dest.test", sender="sender@shop.test")
    wait_for(lambda: len(s.events("queue.deferred")) >= 6, 30, "every message deferred once")
    # a restart on a full disk starts an empty segment, so not even a small
    # record fits in the last page of a file
    assert s.stop() == 0
    filler = small_tmpfs / "filler"
    fill(filler)
    s.start()
    up.clear("down")  # deliveries happen; their outcomes cannot be written
    wait_for(lambda: s.events("spool.unrecorded"), 30, "spool.unrecorded")
    assert scrape(s)["sluice_spool_unrecorded"] > 0
    assert status(s, "/readyz") == 503
    assert s.queue("stats")["data"]["bounces"] == 0  # the bounce is not on disk yet
    filler.unlink()
    wait_for(lambda: s.events("spool.recorded"), 30, "spool.recorded")
    dsn = wait_for(lambda: [m for m in up.messages() if m["mail_from"] == ""], 30, "the bounce")
    assert dsn[0]["rcpt_tos"] == ["sender@shop.test"]
    got = [m for m in up.messages() if m["mail_from"] != ""]
    assert sorted(m["rcpt_tos"][0] for m in got) == ["r@dest.test"] * 5
    assert s.queue("stats")["data"]["bounces"] == 1
    assert scrape(s)["sluice_spool_append_failures_total"] >= 1
    # after a restart nothing is delivered again: every outcome was written
    assert s.stop() == 0
    s.start()
    rec = recovered(s)
    assert rec["active"] == 0 and rec["messages"] == 1 and rec["dead"] == 1, rec
    assert len(ok) == 5
