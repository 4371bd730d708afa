"""Observability, black box: after a scripted run of mixed traffic the
metrics scraped over HTTP equal what the test observed; every log line is
JSON with the schema's fields and no recipient appears in clear; the audit
chain verifies and catches tampering; webhooks arrive signed even when the
receiver fails for a while."""
import base64
import json
import re
import smtplib
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import PASSWORD, ROOT, wait_for

RCPT_OK = ["alice.secret@dest.test", "bob.hidden@dest.test"]
RCPT_BAD = "nobody.private@dest.test"


def scrape(s):
    with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def status(s, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def conf(up_port, extra=""):
    return f"""
[auth]
allow_plaintext_loopback = true
[queue]
retry_base = 1s
retry_cap = 2s
[upstream main]
host = 127.0.0.1
port = {up_port}
tls = none
verify = none
{extra}
"""


def send(s, rcpts, body=b"hello\r\n", login=True):
    with smtplib.SMTP("127.0.0.1", s.port) as c:
        if login:
            c.login("app", PASSWORD)
        c.sendmail("app@shop.test", rcpts, b"From: app@shop.test\r\nSubject: obs\r\n\r\n" + body)


def test_metrics_logs_and_audit_after_mixed_traffic(make_sluice, make_upstream):
    up = make_upstream("--rcpt-reply", f"{RCPT_BAD}=550 5.1.1 no such user")
    s = make_sluice(config_text=conf(up.port))
    s.add_user("app")
    s.start()
    assert status(s, "/healthz") == 200
    wait_for(lambda: status(s, "/readyz") == 200, what="ready")

    accepted = 0
    for _ in range(5):
        send(s, RCPT_OK)
        accepted += 1
    send(s, [RCPT_OK[0], RCPT_BAD])  # one recipient bounces
    accepted += 1
    # rejections: unauthenticated, smuggling, wrong password
    try:
        send(s, RCPT_OK, login=False)
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 530
    with socket.create_connection(("127.0.0.1", s.port)) as k:
        k.recv(1000)
        k.sendall(b"EHLO x\r\nAUTH PLAIN " + base64.b64encode(
            b"\0app\0" + PASSWORD.encode()) + b"\r\nMAIL FROM:<app@shop.test>\r\n"
            b"RCPT TO:<" + RCPT_OK[1].encode() + b">\r\nDATA\r\n")
        buf = b""
        while b"354" not in buf:
            buf += k.recv(4096)
        k.sendall(b"Subject: s\r\n\r\nx\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
        buf = b""
        while b"550" not in buf:
            buf += k.recv(4096)
    try:
        with smtplib.SMTP("127.0.0.1", s.port) as c:
            c.ehlo()
            c.user, c.password = "app", "wrong password"
            c.auth("PLAIN", c.auth_plain)  # one attempt (login() would also try LOGIN)
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535

    # 5 + 1 messages, 12 recipients delivered to the upstream, 1 bounce
    wait_for(lambda: s.queue("stats")["data"]["bounces"] == 1 and
             s.queue("stats")["data"]["active"] == 0, timeout=20, what="deliveries done")
    wait_for(lambda: len(up.messages()) >= accepted + 1, what="upstream got all (and the DSN)")
    m = scrape(s)
    assert m["sluice_messages_accepted_total"] == accepted + 0  # the DSN is not a submission
    assert m['sluice_messages_rejected_total{reason="unauthenticated"}'] == 1
    assert m['sluice_messages_rejected_total{reason="smuggling"}'] == 1
    assert m["sluice_smuggling_attempts_total"] == 1
    assert m["sluice_auth_failures_total"] == 1
    assert m["sluice_bounces_total"] == 1
    delivered = sum(v for k, v in m.items()
                    if k.startswith("sluice_deliveries_total") and 'outcome="delivered"' in k)
    failed = sum(v for k, v in m.items()
                 if k.startswith("sluice_deliveries_total") and 'outcome="failed"' in k)
    got = sum(len(x["rcpt_tos"]) for x in up.messages())
    assert delivered == got == 5 * 2 + 1 + 1  # + the DSN to the sender
    assert failed == 1
    assert m['sluice_upstream_up{upstream="main"}'] == 1
    assert m["sluice_delivery_latency_seconds_count"] == delivered

    # logs: JSON with the schema's fields, recipients never in clear
    text = s.log_path.read_text()
    for line in text.splitlines():
        if not line.startswith("{"):
            continue  # a line printed by something else (none expected)
        e = json.loads(line)
        assert {"ts", "level", "event"} <= set(e)
    for addr in RCPT_OK + [RCPT_BAD]:
        assert addr not in text, f"{addr} appears in the log"
    acc = s.events("smtp.accepted")
    assert len(acc) == accepted and all(a["recipients"].startswith("rcpt:") for a in acc)

    # audit chain: the failure is in it, it verifies, and tampering is caught
    audit = s.var / "audit.log"
    lines = audit.read_text().splitlines()
    assert any('"auth.failure"' in l for l in lines)
    assert any('"policy.rejected"' in l for l in lines)
    ok = s.cli("audit", "verify", str(audit), check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = s.dir / "tampered.log"
    tampered = [l.replace("127.0.0.1", "127.0.0.2") if "auth.failure" in l else l for l in lines]
    assert tampered != lines
    bad.write_text("\n".join(tampered) + "\n")
    t = s.cli("audit", "verify", str(bad), check=False)
    assert t.returncode == 4

    # readiness follows upstream health
    s.stop()


def test_readyz_stays_ready_during_an_upstream_outage(make_sluice):
    """Ready means "accepts and spools mail": an upstream outage queues mail,
    it must not take the relay out of a load balancer."""
    with socket.socket() as k:
        k.bind(("127.0.0.1", 0))
        dead = k.getsockname()[1]
    s = make_sluice(config_text=conf(dead, "connect_timeout = 1s") + "\n[server]\nrelay_networks = 127.0.0.1/32\n")
    s.start()
    send(s, RCPT_OK, login=False)
    wait_for(lambda: s.events("upstream_unhealthy"), what="upstream down")
    with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/readyz", timeout=5) as r:
        assert r.status == 200
        body = json.loads(r.read())
    assert body == {"status": "ready", "upstreams_healthy": 0, "upstreams": 1}
    assert scrape(s)['sluice_upstream_up{upstream="main"}'] == 0
    assert status(s, "/healthz") == 200
    send(s, RCPT_OK, login=False)  # and it still takes mail
    assert s.queue("stats")["data"]["messages"] >= 2


def readyz(s):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_readyz_fails_while_the_spool_disk_is_full(make_sluice, tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        s = make_sluice(env={"SLUICE_SERVER_SPOOL_DIR": str(d),
                             "SLUICE_LIMITS_MAX_MESSAGE_SIZE": "1M"}).start()
        assert readyz(s)[0] == 200
        filler = d / "filler"
        with open(filler, "wb") as f:  # leaves less than one largest message free
            f.write(b"\0" * (1536 * 1024))
        code, body = readyz(s)
        assert code == 503 and body["reasons"] == ["spool disk full"], body
        assert scrape(s)["sluice_spool_free_bytes"] < 1 << 20
        filler.unlink()
        assert readyz(s)[0] == 200
        s.stop()
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_webhooks_arrive_signed_after_receiver_failures(make_sluice, make_upstream, tmp_path):
    secret = tmp_path / "hook.key"
    secret.write_text("hook-secret\n")
    secret.chmod(0o600)  # a secret open to others is refused
    recv = subprocess.Popen(["/usr/bin/python3",
                             str(ROOT / "tests/unit/http/webhook_receiver.py"), "--fail", "3",
                             "--secret-file", str(secret)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)
    try:
        port = json.loads(recv.stdout.readline())["port"]
        up = make_upstream()
        s = make_sluice(config_text=conf(up.port) + f"""
[server]
relay_networks = 127.0.0.1/32
[webhook]
urls = http://127.0.0.1:{port}/hook
secret_file = {secret}
""")
        s.start()
        for _ in range(3):
            send(s, [RCPT_OK[0]], login=False)
        wait_for(lambda: len(up.messages()) == 3, what="deliveries")
        seen = []

        def three_ok():
            line = recv.stdout.readline()
            if line:
                seen.append(json.loads(line))
            return len([x for x in seen if x.get("status") == 200]) >= 3
        wait_for(three_ok, timeout=60, what="webhooks after the receiver recovers")
        ok = [x for x in seen if x.get("status") == 200]
        assert all(x.get("sig_ok") for x in ok)
        assert len({x["id"] for x in ok}) == 3
        assert len([x for x in seen if x.get("status") == 500]) == 3
    finally:
        recv.terminate()
