"""Crash safety: many concurrent submissions, kill -9 at a random moment,
restart. Every message that got 250 must be captured exactly once, with
exactly the bytes that were sent; nothing half-written may appear."""
import email
import hashlib
import random
import smtplib
import threading
import time

from conftest import wait_for

ROUNDS = 4
CLIENTS = 12


def body_for(mid):
    # sizes vary from tiny to ~60 KiB so kills land inside records of all sizes
    rnd = random.Random(mid)
    n = rnd.choice([10, 200, 3000, 20000, 60000])
    line = ("crash-safety " + mid + " ").encode()
    out = bytearray()
    while len(out) < n:
        out += line[: 70] + b"\r\n"
    return bytes(out)


def sender(port, prefix, acked, stop, errors):
    i = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                c.ehlo("crash.test")
                while not stop.is_set():
                    i += 1
                    mid = f"{prefix}-{i}@crash.test"
                    body = body_for(mid)
                    msg = (f"From: app@crash.test\r\nTo: r@dest.test\r\nSubject: {mid}\r\n"
                           f"Message-ID: <{mid}>\r\n\r\n").encode() + body
                    c.sendmail("app@crash.test", ["r@dest.test"], msg)
                    # sendmail returned: the server said 250 for the message
                    acked[mid] = hashlib.sha256(body).hexdigest()
        except (smtplib.SMTPException, OSError) as e:
            errors.append(repr(e))
            if stop.is_set():
                return
            time.sleep(0.01)


def captured_index(s):
    index = {}
    for m in s.captured():
        msg = email.message_from_bytes(m["data"])
        mid = msg["Message-ID"].strip("<> ")
        body = m["data"].split(b"\r\n\r\n", 1)[1]
        index.setdefault(mid, []).append(hashlib.sha256(body).hexdigest())
    return index


def test_kill9_during_concurrent_submissions_loses_nothing(make_sluice):
    s = make_sluice(env={"SLUICE_SERVER_RELAY_NETWORKS": "127.0.0.1/32"})
    acked = {}
    rng = random.Random()
    for rnd in range(ROUNDS):
        s.start()
        stop = threading.Event()
        errors = []
        threads = [threading.Thread(target=sender, args=(s.port, f"r{rnd}c{k}", acked, stop, errors))
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        before = len(acked)
        # let traffic build up, then kill at a random instant
        wait_for(lambda: len(acked) >= before + 50, timeout=30, what="traffic")
        time.sleep(rng.uniform(0.0, 0.4))
        s.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    # final start: recovery must bring every acknowledged message back and deliver it
    s.start()
    def all_there():
        idx = captured_index(s)
        return all(mid in idx for mid in acked)
    wait_for(all_there, timeout=60, what="every acknowledged message captured")
    idx = captured_index(s)
    missing = [m for m in acked if m not in idx]
    dups = {m: v for m, v in idx.items() if len(v) != 1}
    corrupt = [m for m in acked if m in idx and idx[m][0] != acked[m]]
    print(f"acked={len(acked)} captured={len(idx)} missing={len(missing)} dups={len(dups)} "
          f"corrupt={len(corrupt)} unacked_but_captured={len(set(idx) - set(acked))}")
    assert len(acked) > ROUNDS * 50
    assert not missing
    assert not dups
    assert not corrupt
    # every captured file is complete: parses, has our Received line and its envelope
    for m in s.captured():
        assert m["data"].startswith(b"Received: from crash.test")
        assert m["envelope"]["rcpt_to"] == ["r@dest.test"]
    stats = s.queue("stats")
    assert stats["ok"] and stats["data"]["messages"] == 0
