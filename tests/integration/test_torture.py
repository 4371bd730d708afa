"""Reliability torture: kill -9 in a loop under traffic, an upstream that
misbehaves at random, and a disk that fills up. Short by default (part of
`make check`); TORTURE=long (`make torture`) runs the long versions."""
import email
import os
import random
import smtplib
import subprocess
import threading
import time

import pytest

from conftest import wait_for

LONG = os.environ.get("TORTURE") == "long"
KILLS = 100 if LONG else 20


class Traffic:
    """Client threads sending numbered messages; records every 250."""

    def __init__(self, port, threads=8, size=2000, rcpts=("r@dest.test",), tag="t"):
        self.port, self.size, self.rcpts, self.tag = port, size, list(rcpts), tag
        self.acked = {}
        self.errors = 0
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True)
                        for k in range(threads)]
        self.counter = 0

    def next_id(self):
        with self.lock:
            self.counter += 1
            return f"{self.tag}-{self.counter}@torture.test"

    def run(self, k):
        rng = random.Random(k)
        while not self.stop_ev.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as c:
                    c.ehlo("torture.test")
                    for _ in range(rng.randint(1, 20)):
                        if self.stop_ev.is_set():
                            return
                        mid = self.next_id()
                        body = ("x" * 76 + "\r\n") * max(1, rng.randint(1, self.size) // 78)
                        msg = (f"From: app@shop.test\r\nTo: r@dest.test\r\nSubject: {mid}\r\n"
                               f"Message-ID: <{mid}>\r\n\r\n{body}").encode()
                        c.sendmail("app@shop.test", self.rcpts, msg)
                        with self.lock:
                            self.acked[mid] = True
            except (smtplib.SMTPException, OSError):
                with self.lock:
                    self.errors += 1
                time.sleep(0.02)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)


def mids(msgs):
    return [email.message_from_bytes(m["data"])["Message-ID"].strip("<>") for m in msgs]


def relay_conf(port, extra=""):
    return f"""
[server]
relay_networks = 127.0.0.1/32
shutdown_grace = 2s
[queue]
retry_base = 1s
retry_cap = 2s
[upstream sink]
host = 127.0.0.1
port = {port}
tls = none
verify = none
timeout = 2s
connect_timeout = 2s
{extra}
"""


def test_crash_loop_loses_nothing(make_sluice, make_upstream):
    up = make_upstream("--stall", "0.05")  # keep deliveries in flight when the kill lands
    s = make_sluice(config_text=relay_conf(up.port))
    s.start()
    traffic = Traffic(s.port, tag="crash").start()
    rng = random.Random()
    kills = 0
    try:
        for _ in range(KILLS):
            before = len(traffic.acked)
            wait_for(lambda: len(traffic.acked) > before + rng.randint(1, 30), timeout=30,
                     what="traffic between kills")
            time.sleep(rng.uniform(0, 0.2))  # a random instant: DATA, fsync or delivery
            s.kill9()
            kills += 1
            s.start()
    finally:
        traffic.stop()
    acked = set(traffic.acked)
    # drain first (cheap to poll), then read the sink's store once: after
    # 100 rounds there are tens of thousands of files there
    wait_for(lambda: s.queue("stats").get("data", {}).get("messages") == 0,
             timeout=max(120, len(acked) / 40), what="the queue drained")
    missing = acked - set(mids(up.messages()))
    assert not missing, f"{len(missing)} acknowledged messages never reached the sink"
    got = mids(up.messages())
    dups = len(got) - len(set(got))
    print(f"\ncrash loop: kills={kills} acknowledged={len(acked)} delivered={len(set(got))} "
          f"duplicates={dups} client_errors={traffic.errors}")
    assert kills == KILLS
    # duplicates only from deliveries in flight: at most one per upstream connection per kill
    assert dups <= kills * 10


def test_upstream_chaos_every_message_delivered_or_bounced(make_sluice, make_upstream, certs):
    seed = random.randrange(1 << 30)
    up = make_upstream("--tls", "starttls", "--cert", f"{certs}/server.pem", "--key",
                       f"{certs}/server.key", "--chaos", "0.15", "--chaos-seed", str(seed),
                       "--chaos-stall", "3")
    conf = relay_conf(up.port).replace("tls = none\nverify = none",
                                       f"tls = starttls\nca_file = {certs}/ca.pem")
    s = make_sluice(config_text=conf)
    s.start()
    n = 200 if LONG else 60
    traffic = Traffic(s.port, threads=4, rcpts=("a@dest.test", "b@dest.test"), tag="chaos")
    traffic.start()
    wait_for(lambda: len(traffic.acked) >= n, timeout=120, what="messages accepted")
    traffic.stop()
    acked = set(traffic.acked)

    def settled():
        st = s.queue("stats")["data"]
        return st["active"] == 0 and st["held"] == 0 and st["inflight"] == 0
    try:
        wait_for(settled, timeout=int(os.environ.get("CHAOS_WAIT", "240")), what="every message delivered or failed")
    except AssertionError:
        print(s.queue("stats")["data"], s.queue("list", "--state", "all")["data"][:2])
        print([e for e in s.events() if "upstream" in e.get("event", "")][-10:])
        raise
    delivered = set()
    for m in up.messages():
        mid = email.message_from_bytes(m["data"])["Message-ID"].strip("<>")
        for r in m["rcpt_tos"]:
            delivered.add((mid, r))
    failed = set()
    for d in s.queue("dead")["data"]:
        shown = s.queue("show", d["id"])["data"]
        mid = shown.get("meta", {}).get("message_id", "")
        for r in shown["recipients"]:
            if r["state"] == "failed":
                failed.add((mid, r["address"]))
    lost = [(m, r) for m in acked for r in ("a@dest.test", "b@dest.test")
            if (m, r) not in delivered and (m, r) not in failed]
    chaos = sum(1 for e in up.events() if e.get("event") == "chaos")
    stats = s.queue("stats")["data"]
    print(f"\nchaos seed={seed}: acknowledged={len(acked)} recipients delivered="
          f"{len(delivered)} failed={len(failed)} bounces={stats['bounces']} "
          f"chaos events={chaos}")
    assert chaos > 0
    assert not lost, f"lost recipients: {lost[:5]}"


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_under_traffic_recovers_without_loss(make_sluice, make_upstream, small_tmpfs):
    up = make_upstream()
    up.set("down")  # nothing leaves at first, so the spool fills up
    s = make_sluice(config_text=relay_conf(up.port),
                    env={"SLUICE_SERVER_SPOOL_DIR": str(small_tmpfs / "spool")})
    s.start()
    traffic = Traffic(s.port, threads=4, size=30000, tag="full").start()
    wait_for(lambda: s.events("spool.write_failed"), timeout=60, what="disk full")
    full_at = len(traffic.acked)
    up.clear("down")  # deliveries free the spool
    wait_for(lambda: len(traffic.acked) > full_at + 20, timeout=90, what="accepting again")
    traffic.stop()
    acked = set(traffic.acked)
    wait_for(lambda: acked <= set(mids(up.messages())), timeout=120, what="all delivered")
    got = mids(up.messages())
    print(f"\ndisk full: acknowledged={len(acked)} write failures="
          f"{len(s.events('spool.write_failed'))} delivered={len(set(got))}")
    # the spool is intact after a restart: nothing corrupt, nothing left behind
    s.stop()
    s.start()
    assert s.events("spool.recovered", since_start=True)[0]["messages"] == 0
