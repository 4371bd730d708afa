"""The HTTPS submission API, black box: the real daemon, real TLS (its
self-signed certificate, verified), clients in three languages (curl, Python
urllib and http.client, Node's fetch), and the mail it captures or hands to
an aiosmtpd upstream."""
import base64
import email
import email.policy
import json
import re
import signal
import ssl
import subprocess
import threading
import http.client
import urllib.request
import urllib.error
from pathlib import Path

import pytest

from conftest import ROOT, wait_for

HERE = Path(__file__).resolve().parent


def add_key(s, name, *args):
    r = s.cli("creds", "add", name, "--api-key", "--init", *args)
    m = re.search(r"sk_[0-9a-f]+_[A-Za-z0-9_-]+", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    return m.group(0)


def scopes_supported(s):
    r = s.cli("creds", "add", "--help", check=False)
    return "--scope" in (r.stdout + r.stderr)


class Api:
    def __init__(self, s):
        self.s = s
        self.base = f"https://127.0.0.1:{s.api_port}"
        self.cafile = str(s.var / "tls" / "cert.pem")
        self.ctx = ssl.create_default_context(cafile=self.cafile)

    def call(self, method, path, body=None, key=None, headers=None, raw=None):
        """(status, headers, parsed JSON or None) with urllib."""
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                text = r.read()
                return r.status, r.headers, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, e.headers, json.loads(text) if text else None

    def send(self, key, **fields):
        msg = {"from": "app@shop.test", "to": ["rcpt@dest.test"], "subject": "hello",
               "text": "body"}
        msg.update(fields)
        return self.call("POST", "/v1/messages", msg, key=key)


@pytest.fixture
def api(make_sluice):
    s = make_sluice()
    key = add_key(s, "app")
    s.start()
    a = Api(s)
    a.key = key
    return a


def parsed(msg):
    return email.message_from_bytes(msg["data"], policy=email.policy.default)


# ---- submission ----

def test_json_message_is_202_once_durable_and_lands_as_mime(api):
    att = base64.b64encode(b"%PDF-1.4 fake").decode()
    st, h, body = api.send(api.key, to=["Bob Example <bob@dest.test>"], cc=["c@dest.test"],
                           bcc=["hidden@dest.test"], subject="Grüße", html="<p>hi</p>",
                           reply_to="replies@shop.test", headers={"X-Campaign": "spring"},
                           attachments=[{"filename": "a.pdf", "content_type": "application/pdf",
                                         "content": att}],
                           tags=["welcome"], metadata={"user": "42"})
    assert st == 202, body
    assert re.fullmatch(r"[0-9a-f]{16}", body["id"])
    assert [r["to"] for r in body["recipients"]] == ["bob@dest.test", "c@dest.test",
                                                     "hidden@dest.test"]
    assert body["recipients"][0]["id"] == body["id"] + ".0"
    # durable before the answer: the spool already has it
    msgs = api.s.wait_captured(1)
    env = msgs[0]["envelope"]
    assert env["mail_from"] == "app@shop.test"
    assert sorted(env["rcpt_to"]) == ["bob@dest.test", "c@dest.test", "hidden@dest.test"]
    m = parsed(msgs[0])
    assert m["Subject"] == "Grüße"
    assert m["To"] == "Bob Example <bob@dest.test>"
    assert m["Bcc"] is None and b"hidden@dest.test" not in msgs[0]["data"].split(b"\r\n\r\n")[0]
    assert m["Reply-To"] == "replies@shop.test" and m["X-Campaign"] == "spring"
    assert m["Message-ID"].strip("<>") == body["message_id"]
    parts = {p.get_content_type(): p for p in m.walk()}
    assert parts["text/plain"].get_content().strip() == "body"
    assert parts["text/html"].get_content().strip() == "<p>hi</p>"
    assert parts["application/pdf"].get_filename() == "a.pdf"
    assert parts["application/pdf"].get_content() == b"%PDF-1.4 fake"


def test_curl_http_client_keep_alive_and_node_fetch(api):
    msg = json.dumps({"from": "app@shop.test", "to": "r@dest.test", "text": "from curl"})
    r = subprocess.run(["curl", "-sS", "--cacert", api.cafile, "-o", "-", "-w", "\n%{http_code}",
                        "-H", f"Authorization: Bearer {api.key}", "-H",
                        "Content-Type: application/json", "--data-binary", msg,
                        api.base + "/v1/messages"], capture_output=True, text=True, timeout=30)
    out, code = r.stdout.rsplit("\n", 1)
    assert code == "202", r.stdout + r.stderr
    assert json.loads(out)["id"]
    # three requests on one connection (HTTP/1.1 keep-alive)
    c = http.client.HTTPSConnection("127.0.0.1", api.s.api_port, context=api.ctx, timeout=30)
    socks = set()
    for i in range(3):
        c.request("POST", "/v1/messages", body=json.dumps(
            {"from": "app@shop.test", "to": "r@dest.test", "text": f"keep-alive {i}"}),
            headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"})
        resp = c.getresponse()
        assert resp.status == 202, resp.read()
        resp.read()
        socks.add(id(c.sock))
    assert len(socks) == 1
    c.close()
    node = subprocess.run(["node", str(HERE / "api_fetch.mjs"), api.base + "/v1/messages", api.key,
                           json.dumps({"from": "app@shop.test", "to": "r@dest.test",
                                       "text": "from node"})],
                          capture_output=True, text=True, timeout=60,
                          env={"NODE_EXTRA_CA_CERTS": api.cafile, "PATH": "/usr/bin:/bin"})
    assert node.returncode == 0, node.stderr
    res = json.loads(node.stdout)
    assert res["status"] == 202 and res["body"]["id"]
    msgs = api.s.wait_captured(5)
    bodies = b"".join(m["data"] for m in msgs)
    for text in (b"from curl", b"keep-alive 0", b"keep-alive 2", b"from node"):
        assert text in bodies


def test_raw_and_batch(api):
    raw = b"From: app@shop.test\nTo: r@dest.test\nSubject: raw one\n\nraw body\n"
    st, _, body = api.call("POST", "/v1/messages/raw?from=app%40shop.test&to=r1%40dest.test,"
                           "r2%40dest.test", raw=raw, key=api.key,
                           headers={"Content-Type": "message/rfc822"})
    assert st == 202, body
    assert [r["to"] for r in body["recipients"]] == ["r1@dest.test", "r2@dest.test"]
    st, _, body = api.call("POST", "/v1/messages/raw", {
        "from": "app@shop.test", "to": ["r3@dest.test"],
        "raw": "From: app@shop.test\r\nSubject: raw json\r\n\r\nx\r\n"}, key=api.key)
    assert st == 202, body
    batch = {"messages": [
        {"from": "app@shop.test", "to": "b1@dest.test", "text": "batch 1"},
        {"from": "not an address", "to": "b2@dest.test", "text": "batch 2"},
        {"from": "app@shop.test", "to": "b3@dest.test", "text": "batch 3"},
    ]}
    st, _, body = api.call("POST", "/v1/messages/batch", batch, key=api.key)
    assert st == 200, body
    assert [r["status"] for r in body["results"]] == [202, 422, 202]
    assert body["results"][1]["error"]["field"] == "from"
    assert body["accepted"] == 2 and body["refused"] == 1
    msgs = api.s.wait_captured(4)
    subjects = sorted(str(parsed(m)["Subject"]) for m in msgs)
    assert "raw one" in subjects and "raw json" in subjects
    st, _, body = api.call("POST", "/v1/messages/batch", {"messages": [batch["messages"][0]] * 501},
                           key=api.key)
    assert st == 422 and body["error"]["code"] == "too_many_messages"


def test_sendgrid_and_postmark_shapes(api):
    sg = {"personalizations": [{"to": [{"email": "sg@dest.test", "name": "S G"}],
                                "subject": "via sendgrid"}],
          "from": {"email": "app@shop.test", "name": "Shop"},
          "content": [{"type": "text/plain", "value": "sg text"},
                      {"type": "text/html", "value": "<b>sg</b>"}],
          "categories": ["c1"], "custom_args": {"k": "v"}}
    st, h, body = api.call("POST", "/v3/mail/send", sg, key=api.key)
    assert st == 202 and body is None
    assert re.fullmatch(r"[0-9a-f]{16}", h["X-Message-Id"])
    pm = {"From": "Shop <app@shop.test>", "To": "pm1@dest.test, \"P, M\" <pm2@dest.test>",
          "Subject": "via postmark", "TextBody": "pm text", "Tag": "t",
          "Headers": [{"Name": "X-PM", "Value": "1"}],
          "Attachments": [{"Name": "n.txt", "Content": base64.b64encode(b"note").decode(),
                           "ContentType": "text/plain"}]}
    req = urllib.request.Request(api.base + "/email", data=json.dumps(pm).encode(), method="POST",
                                 headers={"X-Postmark-Server-Token": api.key,
                                          "Content-Type": "application/json",
                                          "Accept": "application/json"})
    with urllib.request.urlopen(req, context=api.ctx, timeout=30) as r:
        assert r.status == 200
        pmr = json.loads(r.read())
    assert pmr["ErrorCode"] == 0 and pmr["Message"] == "OK" and pmr["MessageID"]
    st, _, body = api.call("POST", "/v3/mail/send", {**sg, "personalizations": [
        sg["personalizations"][0], sg["personalizations"][0]]}, key=api.key)
    assert st == 422 and body["errors"][0]["message"]
    st, _, body = api.call("POST", "/email", {"To": "x@dest.test", "TextBody": "x"}, key=api.key)
    assert st == 422 and body["ErrorCode"] == 300
    msgs = api.s.wait_captured(2)
    by_subject = {str(parsed(m)["Subject"]): m for m in msgs}
    s1 = parsed(by_subject["via sendgrid"])
    assert s1["From"] == "Shop <app@shop.test>" and s1["To"] == "S G <sg@dest.test>"
    assert {p.get_content_type() for p in s1.walk()} >= {"text/plain", "text/html"}
    p1 = by_subject["via postmark"]
    assert sorted(p1["envelope"]["rcpt_to"]) == ["pm1@dest.test", "pm2@dest.test"]
    p1m = parsed(p1)
    assert p1m["X-PM"] == "1"
    assert [p.get_filename() for p in p1m.walk() if p.get_filename()] == ["n.txt"]


# ---- every error ----

def test_errors_each_have_their_status_code_and_rule(make_sluice):
    s = make_sluice(env={"SLUICE_LIMITS_MAX_MESSAGE_SIZE": "64KiB"})
    key = add_key(s, "app", "--allow-from", "*@shop.test", "--allow-rcpt", "*@dest.test")
    small = add_key(s, "small", "--max-size", "2000")
    slow = add_key(s, "slow", "--rate", "1/hour")
    s.start()
    a = Api(s)

    st, h, body = a.call("POST", "/v1/messages", {"from": "app@shop.test"})
    assert st == 401 and h["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["code"] == "unauthorized"
    st, h, body = a.send("sk_000000000000_wrongwrongwrongwrongwrongwrongwrongwrongwro")
    assert st == 401 and "WWW-Authenticate" in h

    st, _, body = a.call("POST", "/v1/messages", raw=b'{"from": ', key=key,
                         headers={"Content-Type": "application/json"})
    assert st == 400 and body["error"]["code"] == "invalid_json"
    st, _, body = a.call("POST", "/v1/messages", {"to": "r@dest.test", "text": "x"}, key=key)
    assert st == 422 and body["error"]["code"] == "missing_field"
    st, _, body = a.send(key, headers={"Bcc": "x@y.test"})
    assert st == 422 and body["error"]["code"] == "invalid_header"
    st, _, body = a.send(key, attachments=[{"filename": "a", "content": "!!!"}])
    assert st == 422 and body["error"]["code"] == "invalid_base64"
    st, _, body = a.call("POST", "/v1/messages", raw=b"x", key=key,
                         headers={"Content-Type": "text/plain"})
    assert st == 415
    st, _, body = a.call("GET", "/v1/nothing", key=key)
    assert st == 404 and body["error"]["code"] == "not_found"
    st, h, body = a.call("DELETE", "/v1/messages", key=key)
    assert st == 405 and h["Allow"] == "GET, HEAD, POST"
    st, h, body = a.call("GET", "/v1/messages/raw", key=key)
    assert st == 405 and h["Allow"] == "POST"
    st, _, body = a.call("POST", "/v1/messages", {}, key=key,
                         headers={"Idempotency-Key": "x" * 300})
    assert st == 400 and body["error"]["code"] == "invalid_idempotency_key"

    # the intake's rules, the same as for SMTP
    st, _, body = a.send(key, **{"from": "boss@elsewhere.test"})
    assert st == 403 and body["error"]["code"] == "sender_not_allowed"
    assert body["error"]["rule"] == "allow_from" and body["error"]["smtp_reply"].startswith("550")
    st, _, body = a.send(key, to=["r@other.test"])
    assert st == 403 and body["error"]["rule"] == "allow_rcpt"
    st, _, body = a.send(small, text="y" * 5000)
    assert st == 413 and body["error"]["rule"] == "max_size"
    st, _, body = a.send(key, attachments=[{"filename": "run.exe",
                                            "content": base64.b64encode(b"MZ").decode()}])
    assert st == 422 and body["error"]["code"] == "content_refused"
    assert body["error"]["smtp_reply"].startswith("554")
    st, _, body = a.send(slow)
    assert st == 202, body
    st, h, body = a.send(slow)
    assert st == 429 and body["error"]["rule"] == "rate" and int(h["Retry-After"]) > 0
    st, _, body = a.send(key, send_at=4102444800)
    assert st == 422 and body["error"]["rule"] == "send_at"
    # a body over 1.4 x max_message_size is refused by the HTTP layer
    # (evhttp answers 413 to the Content-Length, before the body is sent)
    big = s.dir / "big.json"
    big.write_bytes(b"{" + b" " * (300 * 1024) + b"}")
    r = subprocess.run(["curl", "-sS", "--cacert", a.cafile, "-o", "/dev/null", "-w",
                        "%{http_code}", "-H", f"Authorization: Bearer {key}", "-H",
                        "Expect: 100-continue", "-H", "Content-Type: application/json",
                        "--data-binary", f"@{big}", a.base + "/v1/messages"],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout == "413", r.stdout + r.stderr
    # scopes: a send-only key may not read or re-drive
    st, _, body = a.call("GET", "/v1/events", key=key)
    assert st == 403 and body["error"]["code"] == "missing_scope"
    st, _, body = a.call("POST", "/v1/messages/0000000000000001/retry", key=key)
    assert st == 403
    # every refusal was reported like an SMTP one
    reasons = {e.get("reason") for e in s.events("smtp.rejected")}
    assert {"sender", "recipient", "size", "content", "rate"} <= reasons, reasons
    assert any(not e.get("ok", True) or e.get("event") == "auth.failure"
               for e in s.events("auth.failure"))


# ---- idempotency ----

def test_idempotency_key_replays_conflicts_and_releases(api):
    h = {"Idempotency-Key": "order-1"}
    st, h1, b1 = api.call("POST", "/v1/messages", {"from": "app@shop.test", "to": "r@dest.test",
                                                   "text": "once"}, key=api.key, headers=h)
    assert st == 202
    st, h2, b2 = api.call("POST", "/v1/messages", {"from": "app@shop.test", "to": "r@dest.test",
                                                   "text": "once"}, key=api.key, headers=h)
    assert st == 202 and b2 == b1 and h2["Idempotent-Replayed"] == "true"
    st, _, b3 = api.call("POST", "/v1/messages", {"from": "app@shop.test", "to": "r@dest.test",
                                                  "text": "changed"}, key=api.key, headers=h)
    assert st == 409 and b3["error"]["code"] == "idempotency_key_reused"
    # a refused request frees its key
    h = {"Idempotency-Key": "order-2"}
    st, _, _ = api.call("POST", "/v1/messages", {"to": "r@dest.test", "text": "x"}, key=api.key,
                        headers=h)
    assert st == 422
    st, _, b4 = api.call("POST", "/v1/messages", {"from": "app@shop.test", "to": "r@dest.test",
                                                  "text": "second try"}, key=api.key, headers=h)
    assert st == 202
    # the key is per credential
    other = add_key(api.s, "other")
    st, _, b5 = api.call("POST", "/v1/messages", {"from": "app@shop.test", "to": "r@dest.test",
                                                  "text": "once"}, key=other,
                         headers={"Idempotency-Key": "order-1"})
    assert st == 202 and b5["id"] != b1["id"]
    # durable across a restart
    api.s.stop()
    api.s.start()
    st, h6, b6 = api.call("POST", "/v1/messages", {"from": "app@shop.test", "to": "r@dest.test",
                                                   "text": "once"}, key=api.key,
                          headers={"Idempotency-Key": "order-1"})
    assert st == 202 and b6["id"] == b1["id"] and h6["Idempotent-Replayed"] == "true"
    msgs = api.s.wait_captured(3)
    assert sum(b"once" in m["data"] for m in msgs) == 2  # app's and other's, not the replays


def test_two_concurrent_requests_with_one_key_send_one_message(api):
    body = json.dumps({"from": "app@shop.test", "to": "r@dest.test",
                       "text": "concurrent", "attachments": [
                           {"filename": "big.bin",
                            "content": base64.b64encode(b"z" * 2_000_000).decode()}]}).encode()
    results = []
    go = threading.Barrier(2)

    def post():
        go.wait()
        results.append(api.call("POST", "/v1/messages", raw=body, key=api.key,
                                headers={"Idempotency-Key": "same",
                                         "Content-Type": "application/json"}))

    ts = [threading.Thread(target=post) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    statuses = sorted(r[0] for r in results)
    assert statuses in ([202, 202], [202, 409]), results
    ids = {r[2]["id"] for r in results if r[0] == 202}
    assert len(ids) == 1
    if statuses == [202, 409]:
        assert [r for r in results if r[0] == 409][0][2]["error"]["code"] == \
            "idempotency_key_in_flight"
    api.s.wait_captured(1)
    st, _, again = api.call("POST", "/v1/messages", raw=body, key=api.key,
                            headers={"Idempotency-Key": "same",
                                     "Content-Type": "application/json"})
    assert st == 202 and again["id"] in ids
    assert len(api.s.captured()) == 1


# ---- durability ----

def test_kill9_after_202_then_restart_delivers_exactly_once(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")  # nothing is delivered before the crash
    cfg = ("[queue]\nretry_base = 1s\nretry_cap = 1s\n"
           f"\n[upstream main]\nhost = 127.0.0.1\nport = {up.port}\ntls = none\nverify = none\n")
    s = make_sluice(config_text=cfg)
    key = add_key(s, "app")
    s.start()
    a = Api(s)
    ids = []
    for i in range(3):
        st, _, body = a.send(key, text=f"crash test {i}", to=[f"r{i}@dest.test"])
        assert st == 202, body
        ids.append(body["id"])
    s.kill9()
    up.clear("down")
    s.start()
    wait_for(lambda: len(up.messages()) >= 3, timeout=30, what="3 deliveries")
    got = [m for m in up.messages() if b"crash test" in m["data"]]
    assert sorted(re.search(rb"crash test \d", m["data"]).group(0) for m in got) == \
        [b"crash test 0", b"crash test 1", b"crash test 2"]
    wait_for(lambda: s.queue("list")["data"] == [] if s.queue("list").get("data") is not None
             else False, timeout=15, what="an empty queue")
    assert len(up.messages()) == 3


# ---- reading ----

def test_message_state_events_and_retry(make_sluice):
    s = make_sluice()
    if not scopes_supported(s):
        pytest.skip("this build's 'creds add' has no --scope")
    key = add_key(s, "app", "--scope", "send,read")
    sendonly = add_key(s, "writer")
    admin = add_key(s, "ops", "--scope", "admin")
    s.start()
    a = Api(s)
    st, _, sent = a.send(key, tags=["t1"], metadata={"order": "7"})
    assert st == 202
    s.wait_captured(1)

    def delivered():
        st, _, m = a.call("GET", f"/v1/messages/{sent['id']}", key=key)
        return st == 200 and any(e["type"] == "delivered" for e in m["events"]) and m
    m = wait_for(delivered, what="the delivered event")
    assert m["tags"] == ["t1"] and m["metadata"] == {"order": "7"}
    assert [e["type"] for e in m["events"]][:1] == ["queued"]
    st, _, ev = a.call("GET", "/v1/events?since=0", key=key)
    assert st == 200 and {e["id"] for e in ev["events"]} == {sent["id"]}
    st, _, ev2 = a.call("GET", f"/v1/events?since={ev['next']}", key=key)
    assert st == 200 and ev2["events"] == []
    # another credential's message reads as unknown; admin sees it
    st, _, other = a.send(sendonly)
    assert st == 202
    st, _, _ = a.call("GET", f"/v1/messages/{other['id']}", key=key)
    assert st == 404
    st, _, m2 = a.call("GET", f"/v1/messages/{other['id']}", key=admin)
    assert st == 200 and m2["credential"] == "writer"
    st, _, body = a.call("GET", "/v1/events?since=abc", key=key)
    assert st == 400
    st, _, body = a.call("POST", "/v1/messages/00000000000000ff/retry", key=admin)
    assert st == 404


def test_queue_listing_by_state_and_owner(make_sluice, make_upstream):
    up = make_upstream()
    up.set("down")  # everything stays queued
    cfg = ("[queue]\nretry_base = 1h\nretry_cap = 1h\n"
           f"\n[upstream main]\nhost = 127.0.0.1\nport = {up.port}\ntls = none\nverify = none\n")
    s = make_sluice(config_text=cfg)
    if not scopes_supported(s):
        pytest.skip("this build's 'creds add' has no --scope")
    key = add_key(s, "app", "--scope", "send,read")
    other = add_key(s, "writer")
    admin = add_key(s, "ops", "--scope", "admin")
    s.start()
    a = Api(s)
    mine = [a.send(key, text=f"listed {i}")[2]["id"] for i in range(2)]
    assert a.send(other, text="not mine")[0] == 202

    def listed(k, q):
        st, _, body = a.call("GET", "/v1/messages" + q, key=k)
        assert st == 200, body
        return body
    body = wait_for(lambda: (b := listed(key, "?state=queued")) and b["total"] == 2 and b,
                    what="two queued messages of app")
    assert sorted(m["id"] for m in body["messages"]) == sorted(mine)
    assert all(m["state"] == "queued" and m["credential"] == "app" for m in body["messages"])
    assert listed(admin, "?state=queued")["total"] == 3
    assert listed(admin, "?state=dead")["total"] == 0
    page = listed(admin, "?limit=1")
    assert len(page["messages"]) == 1 and page["truncated"] and page["total"] == 3
    st, _, body = a.call("GET", "/v1/messages?state=lost", key=admin)
    assert st == 400 and body["error"]["code"] == "invalid_query"
    st, _, body = a.call("GET", "/v1/messages", key=other)  # send scope only
    assert st == 403


# ---- the document and the listener ----

def test_openapi_document_is_served_and_matches_the_repo(api):
    st, _, doc = api.call("GET", "/v1/openapi.json")
    assert st == 200
    assert doc == json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert doc["openapi"].startswith("3.")
    for p in ("/v1/messages", "/v1/messages/raw", "/v1/messages/batch", "/v1/messages/{id}",
              "/v1/messages/{id}/retry", "/v1/events", "/v3/mail/send", "/email"):
        assert p in doc["paths"], p


def test_tls_below_1_2_is_refused(api):
    ok = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{api.s.api_port}",
                         "-tls1_2"], input="", capture_output=True, text=True, timeout=30)
    assert "Protocol  : TLSv1.2" in ok.stdout or "TLSv1.2" in ok.stdout, ok.stdout[-500:]
    old = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{api.s.api_port}",
                          "-tls1_1"], input="", capture_output=True, text=True, timeout=30)
    assert old.returncode != 0
    assert "Cipher is (NONE)" in old.stdout or "no protocols available" in old.stderr or \
        "alert" in old.stderr


def test_a_proven_key_is_remembered_until_the_store_changes(api):
    for _ in range(3):
        st, _, _ = api.send(api.key)
        assert st == 202
    # one check against the store (and one auth.success) for the three requests
    oks = [e for e in api.s.events("auth.success") if e.get("method") == "api-key"]
    assert len(oks) == 1, oks
    api.s.cli("creds", "revoke", "app")
    st, h, body = api.send(api.key)
    assert st == 401 and body["error"]["code"] == "unauthorized"
