"""`sluice verify --client-ip`: which From domain DMARC is evaluated for.

One zone: bank.example publishes p=reject and authorises nobody; evil.example
publishes p=none and authorises the client address, so SPF passes for it. A From field that a reader sees as bank.example must never
come out as dmarc=pass for evil.example.

Run with /usr/bin/python3 -m pytest; SLUICE_BIN names the binary.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(REPO / "build" / "sluice"))
CLIENT = "192.0.2.77"

ZONE = f"""
bank.example          TXT "v=spf1 -all"
_dmarc.bank.example   TXT "v=DMARC1; p=reject"
evil.example          TXT "v=spf1 ip4:{CLIENT} -all"
_dmarc.evil.example   TXT "v=DMARC1; p=none"
strict.example        TXT "v=spf1 -all"
_dmarc.strict.example TXT "v=DMARC1; p=reject; pct=150; ri=abc; junk"
_dmarc.team.corp.example TXT "v=DMARC1; p=none"
_dmarc.corp.example   TXT "v=DMARC1; p=reject"
_dmarc.xn--bcher-kva.example TXT "v=DMARC1; p=quarantine"
"""


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    path = tmp_path_factory.mktemp("dmarc") / "zone.txt"
    path.write_text(ZONE)
    return path


def verify(zone, tmp_path, header, mail_from="bounce@evil.example", *extra):
    msg = tmp_path / "m.eml"
    msg.write_text(header + "To: someone@example.net\nSubject: hi\n\nHello.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    p = subprocess.run([SLUICE, "verify", str(msg), "--dns-zone", str(zone), "--json",
                        "--authserv-id", "mx.test", "--client-ip", CLIENT, "--helo",
                        "mail.evil.example", "--mail-from", mail_from, *extra],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


@pytest.mark.parametrize("from_field", [
    "From: victim@bank.example (attacker@evil.example)\n",
    "From: victim@bank.example (x <attacker@evil.example>)\n",
    "From: (attacker@evil.example) victim@bank.example\n",
    "From: \"attacker@evil.example\" <victim@bank.example>\n",
    "From: Bank\n <victim@bank.example>\n",
])
def test_comment_or_display_name_is_not_the_author(zone, tmp_path, from_field):
    rc, doc = verify(zone, tmp_path, from_field)
    assert doc["spf"]["result"] == "pass"
    d = doc["dmarc"]
    assert (d["result"], d["from_domain"], d["policy"], d["disposition"]) == (
        "fail", "bank.example", "reject", "reject"), d
    assert "dmarc=fail (p=reject dis=reject) header.from=bank.example" in \
        doc["authentication_results"]
    assert rc == 4


def test_plain_author_still_passes(zone, tmp_path):
    rc, doc = verify(zone, tmp_path, "From: Someone <a@evil.example>\n")
    assert (doc["dmarc"]["result"], doc["dmarc"]["from_domain"]) == ("pass", "evil.example")
    assert rc == 0


@pytest.mark.parametrize("header,problem", [
    ("From: a@evil.example\nFrom: victim@bank.example\n", "more than one From field"),
    ("From: a@evil.example\nFrom: b@evil.example\n", "more than one From field"),
    ("From: attacker@evil.example <victim@bank.example>\n", "not a valid RFC 5322"),
    ("From: victim@bank.example@evil.example\n", "not a valid RFC 5322"),
    ("From: Undisclosed:;\n", "not a valid RFC 5322"),
    ("Sender: a@evil.example\n", "no From field"),
])
def test_unusable_from_is_permerror(zone, tmp_path, header, problem):
    rc, doc = verify(zone, tmp_path, header)
    d = doc["dmarc"]
    assert d["result"] == "permerror" and problem in d["problem"], d
    assert "dmarc=permerror" in doc["authentication_results"]
    assert rc == 4


def test_several_author_domains(zone, tmp_path):
    # RFC 7489 6.6.1: each domain is checked; the strictest failing policy wins
    rc, doc = verify(zone, tmp_path, "From: a@evil.example, victim@bank.example\n")
    d = doc["dmarc"]
    assert (d["result"], d["from_domain"], d["disposition"]) == ("fail", "bank.example",
                                                                 "reject"), d
    assert rc == 4
    # each one would pass on its own (relaxed SPF alignment): still no pass
    rc, doc = verify(zone, tmp_path, "From: a@evil.example, b@news.evil.example\n")
    d = doc["dmarc"]
    assert d["result"] == "permerror" and "2 domains" in d["problem"], d
    assert rc == 4
    # several mailboxes of one domain are one Author Domain
    rc, doc = verify(zone, tmp_path, "From: a@evil.example, b@Evil.Example\nSender: a@evil.example\n")
    assert doc["dmarc"]["result"] == "pass" and rc == 0


def test_bad_tags_keep_the_policy(zone, tmp_path):
    # RFC 7489 6.3: pct=150, ri=abc and a tag without '=' are ignored, p=reject stays
    for mode in ("rfc9989", "rfc7489"):
        rc, doc = verify(zone, tmp_path, "From: a@strict.example\n", "bounce@evil.example",
                         "--dmarc-mode", mode)
        d = doc["dmarc"]
        assert (d["result"], d["policy"], d["disposition"], d["mode"]) == (
            "fail", "reject", "reject", mode), d
        assert rc == 4


def test_dmarc_mode_switch(zone, tmp_path):
    # a.team.corp.example: RFC 9989 walks up to team.corp.example's own record;
    # RFC 7489 asks the From domain, then the PSL Organizational Domain
    header = "From: x@a.team.corp.example\n"
    rc, doc = verify(zone, tmp_path, header)
    d = doc["dmarc"]
    assert (d["mode"], d["record"], d["policy"], d["org_domain"]) == (
        "rfc9989", "_dmarc.team.corp.example", "none", "corp.example"), d
    rc, doc = verify(zone, tmp_path, header, "bounce@evil.example", "--dmarc-mode", "rfc7489")
    d = doc["dmarc"]
    assert (d["mode"], d["record"], d["policy"], d["disposition"]) == (
        "rfc7489", "_dmarc.corp.example", "reject", "reject"), d
    p = subprocess.run([SLUICE, "verify", str(tmp_path / "m.eml"), "--client-ip", CLIENT,
                        "--helo", "h.example", "--dmarc-mode", "psl"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--dmarc-mode takes rfc9989 or rfc7489" in p.stderr


def test_unicode_from_domain_is_looked_up_as_a_label(zone, tmp_path):
    # RFC 7489 6.6.1 (SMTPUTF8 mail): bücher.example is asked as xn--bcher-kva.example
    rc, doc = verify(zone, tmp_path, "From: a@b\u00fccher.example\n")
    d = doc["dmarc"]
    assert (d["result"], d["from_domain"], d["policy"]) == (
        "fail", "xn--bcher-kva.example", "quarantine"), d
    assert rc == 4
