"""Accounting, black box: a scripted run of mixed traffic from several
credentials (accepted, refused for various reasons, delivered to a real
upstream, one recipient bounced with 550), then `sluice stats --json` must
equal, message for message, what the upstream received and what the relay
refused."""
import json
import smtplib

from conftest import PASSWORD, wait_for
from support_smtp import Conn, dot_stuff

BAD = "nobody@dest.test"


def conf(up_port):
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
"""


def content(sender, n):
    return (f"From: <{sender}>\r\nTo: team@dest.test\r\nSubject: acct {n}\r\n\r\n"
            + "line of text\r\n" * (n + 1)).encode()


class Script:
    """Sends and remembers what the relay answered, per credential."""

    def __init__(self, s):
        self.s = s
        self.accepted = {}  # cred -> [(sender, rcpts, bytes)]
        self.rejected = {}  # cred -> {reason: count}

    def refuse(self, cred, reason):
        r = self.rejected.setdefault(cred, {})
        r[reason] = r.get(reason, 0) + 1

    def transaction(self, c, cred, sender, rcpts, n, headers_from=None):
        """MAIL, RCPTs, DATA; returns the final reply code, counting what
        the relay refused along the way."""
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if r.code != 250:
            self.refuse(cred, {550: "sender", 450: "rate", 452: "quota"}[r.code])
            return r.code
        ok = []
        for rc in rcpts:
            r = c.cmd(f"RCPT TO:<{rc}>")
            if r.code == 250:
                ok.append(rc)
            else:
                assert r.code == 550, str(r)
                self.refuse(cred, "recipient")
        if not ok:
            c.expect("RSET", 250)
            return 550
        body = content(headers_from or sender, n)
        c.expect("DATA", 354)
        c.send(dot_stuff(body) + b".\r\n")
        r = c.reply()
        if r.code == 250:
            self.accepted.setdefault(cred, []).append((sender, ok, len(body)))
        else:
            assert (r.code, r.enhanced) == (550, "5.7.1"), str(r)
            self.refuse(cred, "header_from")
        return r.code


def stats(s):
    r = s.cli("stats", "--json", "--since", "today")
    return {c["name"]: c for c in json.loads(r.stdout)["creds"]}


def test_stats_match_traffic_message_for_message(make_sluice, make_upstream):
    up = make_upstream("--rcpt-reply", f"{BAD}=550 5.1.1 no such user")
    s = make_sluice(config_text=conf(up.port))
    for name, args in (("alpha", ["--allow-from", "*@alpha.example"]),
                       ("beta", ["--rate", "3/min", "--allow-rcpt", "*@dest.test"]),
                       ("gamma", [])):
        s.cli("creds", "add", "--init", name, "--password", *args, input=PASSWORD + "\n")
    s.start()
    sc = Script(s)

    with Conn(s.port) as c:
        c.ehlo()
        c.login("alpha", PASSWORD)
        for n in range(3):
            assert sc.transaction(c, "alpha", "app@alpha.example",
                                  [f"a{n}@dest.test", f"b{n}@dest.test"], n) == 250
        # one recipient bounces at the upstream
        assert sc.transaction(c, "alpha", "app@alpha.example", ["c@dest.test", BAD], 5) == 250
        assert sc.transaction(c, "alpha", "spoof@bank.example", ["d@dest.test"], 1) == 550
        assert sc.transaction(c, "alpha", "app@alpha.example", ["d@dest.test"], 1,
                              headers_from="ceo@bank.example") == 550
    with Conn(s.port) as c:
        c.ehlo()
        c.login("beta", PASSWORD)
        for n in range(3):
            rc = sc.transaction(c, "beta", "x@beta.example",
                                ["e@dest.test", "outside@example.net"], n)
            assert rc == 250
        assert sc.transaction(c, "beta", "x@beta.example", ["e@dest.test"], 1) == 450
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        c.login("gamma", PASSWORD)
        c.sendmail("g@gamma.example", ["f@dest.test", "g@dest.test"], content("g@gamma.example", 2))
        sc.accepted["gamma"] = [("g@gamma.example", ["f@dest.test", "g@dest.test"],
                                 len(content("g@gamma.example", 2)))]
    # a failed login counts under "-"
    with Conn(s.port) as c:
        c.ehlo()
        assert c.auth_plain("alpha", "wrong password").code == 535

    n_msgs = sum(len(v) for v in sc.accepted.values())
    wait_for(lambda: s.queue("stats")["data"]["active"] == 0 and
             s.queue("stats")["data"]["bounces"] == 1, timeout=30, what="deliveries done")
    wait_for(lambda: len(up.messages()) >= n_msgs + 1, what="upstream got all and the DSN")
    sink = [m for m in up.messages() if m["mail_from"] not in ("", "<>")]
    assert len(sink) == n_msgs, [m["mail_from"] for m in up.messages()]

    def expected():
        out = {}
        for cred, msgs in sc.accepted.items():
            senders = {snd for snd, _, _ in msgs}
            got = sum(len(m["rcpt_tos"]) for m in sink if m["mail_from"] in senders)
            bounced = sum(1 for _, rcpts, _ in msgs for r in rcpts if r == BAD)
            refused = sc.rejected.get(cred, {})
            out[cred] = {"accepted": len(msgs), "delivered": got, "bounced": bounced,
                         "deferred": 0, "rejected": sum(refused.values()),
                         "rejected_by_reason": refused,
                         "bytes": sum(b for _, _, b in msgs)}
        out["-"] = {"rejected": 1, "rejected_by_reason": {"auth": 1}}
        return out

    want = expected()
    assert want["alpha"]["delivered"] == 7 and want["alpha"]["bounced"] == 1
    assert want["beta"]["rejected_by_reason"] == {"recipient": 3, "rate": 1}

    def matches():
        got = stats(s)
        return all({k: got.get(cred, {}).get(k) for k in fields} == fields
                   for cred, fields in want.items())

    try:
        wait_for(matches, timeout=10, what="stats to match the traffic")
    except AssertionError:
        got = stats(s)
        raise AssertionError(f"stats differ:\nwant {want}\ngot  "
                             f"{ {c: {k: got.get(c, {}).get(k) for k in f} for c, f in want.items()} }")
    # delivered bytes are counted too, per recipient
    assert stats(s)["alpha"]["bytes_delivered"] > 0
