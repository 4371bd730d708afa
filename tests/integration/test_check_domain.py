"""`sluice check-domain` and `sluice dns-records` against the fixture zones.

tests/fixtures/zones/*.zone hold one known-good domain and one domain per
known problem; each problem domain must fail (or warn) exactly the check for
its problem while every other check passes, in text and JSON output, with
the documented exit code. MTA-STS policies come from a local HTTPS server
(http.server + ssl on 127.0.0.1, certificates from tests/support/certs.sh)
through --mta-sts-url-base and --ca-file. DKIM keys are made with
`sluice dkim keygen` and their records appended to the zone.

Run with /usr/bin/python3 -m pytest; SLUICE_BIN names the binary (default
build/sluice under the repository root).
"""

import http.server
import json
import os
import pty
import re
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(REPO / "build" / "sluice"))
ZONES = REPO / "tests" / "fixtures" / "zones"
CERTS_SH = REPO / "tests" / "support" / "certs.sh"
SENDING_IP = "192.0.2.10"

# Every check a fully set-up domain gets with --sending-ip (one finding each).
ALL_CHECKS = [
    "spf-record", "spf-syntax", "spf-lookups", "spf-all", "spf-authorized",
    "dkim-record", "dkim-syntax", "dkim-key-match", "dkim-key-strength",
    "dmarc-record", "dmarc-policy", "dmarc-rua", "mx",
    "mta-sts-record", "mta-sts-policy", "mta-sts-mx", "tls-rpt", "dane", "ptr", "fcrdns",
]

# domain -> (extra arguments, {check: expected status}); every other check passes.
CASES = {
    "good.test": ([], {}),
    "sendgrid.test": ([], {}),
    "nospf.test": ([], {"spf-record": "fail"}),
    "twospf.test": ([], {"spf-record": "fail"}),
    "lookups.test": ([], {"spf-lookups": "fail"}),
    "plusall.test": ([], {"spf-all": "fail"}),
    "weakkey.test": (["--selector", "weak"], {"dkim-key-strength": "warn"}),
    "tinykey.test": (["--selector", "tiny"], {"dkim-key-strength": "fail"}),
    "dmarcsyntax.test": ([], {"dmarc-record": "fail"}),
    "dmarcnone.test": ([], {"dmarc-policy": "warn"}),
    "norua.test": ([], {"dmarc-rua": "warn"}),
    "mismatch.test": ([], {"dkim-key-match": "fail"}),
    "nomx.test": ([], {"mx": "fail"}),
    "stsmismatch.test": ([], {"mta-sts-mx": "fail"}),
    "ststesting.test": ([], {"mta-sts-policy": "warn"}),
    "notlsrpt.test": ([], {"tls-rpt": "warn"}),
    "nodane.test": ([], {"dane": "warn"}),
}
# Checks that cannot run when the named check failed, so they are absent.
ABSENT = {
    "nospf.test": {"spf-syntax", "spf-lookups", "spf-all", "spf-authorized"},
    "twospf.test": {"spf-syntax", "spf-lookups", "spf-all", "spf-authorized"},
    "weakkey.test": {"dkim-key-match"},  # no local key for a --selector-only record
    "tinykey.test": {"dkim-key-match"},
    "nomx.test": {"mta-sts-mx", "dane"},
    "dmarcsyntax.test": {"dmarc-policy", "dmarc-rua"},
}
# Domains whose DKIM selector s1 is a local key made by the test.
KEYED = [d for d in CASES if d not in ("weakkey.test", "tinykey.test")]


def policy(mode, mx, max_age=604800):
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx] + [f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


class PolicyServer:
    """HTTPS server for /<behaviour>/<domain>/.well-known/mta-sts.txt.

    behaviour "ok" serves the domain's policy as text/plain; "redirect",
    "html", "missing" and "big" break one fetch rule of RFC 8461 3.3 each."""

    def __init__(self, certdir):
        self.policies = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status, ctype, body, extra=None):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                m = re.fullmatch(r"/(\w+)/([^/]+)/\.well-known/mta-sts\.txt", self.path)
                if not m or m.group(2) not in outer.policies:
                    return self.send(404, "text/plain", "no such policy\n")
                how, body = m.group(1), outer.policies[m.group(2)]
                if how == "ok":
                    self.send(200, "text/plain; charset=utf-8", body)
                elif how == "redirect":
                    self.send(302, "text/plain", "", {"Location": f"/ok/{m.group(2)}/.well-known/mta-sts.txt"})
                elif how == "html":
                    self.send(200, "text/html", body)
                elif how == "big":
                    self.send(200, "text/plain", body + "x-pad: " + "y" * 70000 + "\r\n")
                else:
                    self.send(404, "text/plain", "not here\n")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certdir / "server.pem", certdir / "server.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def base(self, how="ok"):
        return f"https://127.0.0.1:{self.port}/{how}/{{domain}}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLUICE_") or k in ("SLUICE_TESTDATA", "SLUICE_SOURCE_ROOT")}
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def keygen(keydir, domain, selector="s1", alg="ed25519"):
    """Makes a key with sluice and returns its zone line."""
    p = subprocess.run([SLUICE, "dkim", "keygen", "--domain", domain, "--selector", selector,
                        "--algorithm", alg, "--out", str(keydir), "--json"],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert p.returncode == 0, p.stderr
    k = json.loads(p.stdout)
    return k["name"] + " TXT " + " ".join(f'"{s}"' for s in k["strings"]) + "\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("check_domain")
    certs = tmp / "certs"
    subprocess.run(["sh", str(CERTS_SH), str(certs)], check=True, timeout=120)
    keys = tmp / "keys"
    other = tmp / "otherkeys"
    zone = "".join(p.read_text() for p in sorted(ZONES.glob("*.zone")))
    for d in KEYED:
        line = keygen(keys, d)
        if d == "mismatch.test":
            line = keygen(other, d)  # publish a key that is not the local one
        zone += line
    zone_path = tmp / "all.zone"
    zone_path.write_text(zone)
    server = PolicyServer(certs)
    for d in CASES:
        server.policies[d] = policy("enforce", [f"mx1.{d}"])
    server.policies["stsmismatch.test"] = policy("enforce", ["*.elsewhere.test"])
    server.policies["ststesting.test"] = policy("testing", ["mx1.ststesting.test"])
    w = {"tmp": tmp, "certs": certs, "keys": keys, "zone": zone_path, "server": server}
    yield w
    server.close()


def check(world, domain, *args, how="ok", env=None, zone=None, json_out=True, ip=SENDING_IP):
    cmd = [SLUICE, "check-domain", domain, "--dns-zone", str(zone or world["zone"]),
           "--mta-sts-url-base", world["server"].base(how), "--ca-file",
           str(world["certs"] / "ca.pem")]
    if ip:
        cmd += ["--sending-ip", ip]
    if json_out:
        cmd.append("--json")
    cmd += list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=world["tmp"],
                       env=clean_env(SLUICE_DKIM_KEY_DIR=str(world["keys"]), **(env or {})))
    assert p.returncode in (0, 4, 5), p.stderr
    return p, (json.loads(p.stdout) if json_out else None)


def statuses(doc):
    out = {}
    for f in doc["findings"]:
        out.setdefault(f["check"], []).append(f["status"])
    return out


def exit_for(expected):
    vals = set(expected.values())
    return 4 if "fail" in vals else 5 if "warn" in vals else 0


@pytest.mark.parametrize("domain", sorted(CASES))
def test_fixture_json(world, domain):
    args, expected = CASES[domain]
    p, doc = check(world, domain, *args)
    assert doc["domain"] == domain
    got = statuses(doc)
    want_checks = set(ALL_CHECKS) - ABSENT.get(domain, set())
    assert set(got) == want_checks, (domain, sorted(got))
    for name, sts in got.items():
        assert sts == [expected.get(name, "pass")], (domain, name, sts, doc)
    for f in doc["findings"]:
        assert set(f) == {"check", "status", "message", "fix"}
        assert f["message"]
        if f["status"] == "pass":
            assert f["fix"] is None
        else:
            assert f["fix"] and "\n" not in f["fix"]
    s = doc["summary"]
    assert s["pass"] + s["warn"] + s["fail"] == len(doc["findings"])
    assert s["fail"] == sum(v == "fail" for v in expected.values())
    assert s["warn"] == sum(v == "warn" for v in expected.values())
    assert p.returncode == exit_for(expected)


@pytest.mark.parametrize("domain", sorted(CASES))
def test_fixture_text(world, domain):
    args, expected = CASES[domain]
    p, _ = check(world, domain, *args, json_out=False)
    assert p.returncode == exit_for(expected)
    assert "\033[" not in p.stdout  # piped: no colours
    lines = p.stdout.splitlines()
    assert lines[0] == f"check-domain {domain}"
    rows = [l for l in lines if re.match(r"  (PASS|WARN|FAIL)  ", l)]
    for name, sts in expected.items():
        idx = next(i for i, l in enumerate(lines) if re.match(rf"  {sts.upper()}\s+{name} ", l))
        assert "fix: " in lines[idx + 1], lines[idx:idx + 2]
    assert sum(1 for l in rows if not l.startswith("  PASS")) == len(expected)
    n_fail = sum(v == "fail" for v in expected.values())
    n_warn = sum(v == "warn" for v in expected.values())
    assert lines[-1] == f"summary: {len(rows) - n_fail - n_warn} pass, {n_warn} warn, {n_fail} fail"


def test_colours_on_a_terminal(world):
    master, slave = pty.openpty()
    cmd = [SLUICE, "check-domain", "plusall.test", "--dns-zone", str(world["zone"]),
           "--mta-sts-url-base", world["server"].base(), "--ca-file", str(world["certs"] / "ca.pem")]
    p = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, cwd=world["tmp"],
                         env=clean_env(SLUICE_DKIM_KEY_DIR=str(world["keys"])))
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=60) == 4
    text = out.decode()
    assert "\033[31mFAIL\033[0m" in text and "\033[32mPASS\033[0m" in text
    # --no-color on a terminal: plain
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd + ["--no-color"], stdout=slave, cwd=world["tmp"],
                         env=clean_env(SLUICE_DKIM_KEY_DIR=str(world["keys"])))
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    p.wait(timeout=60)
    assert b"\033[" not in out and b"FAIL" in out


def only(doc, name):
    found = [f for f in doc["findings"] if f["check"] == name]
    assert len(found) == 1, (name, doc)
    return found[0]


def test_reverse_dns(world):
    _, doc = check(world, "good.test", ip="192.0.2.66")  # no PTR
    assert only(doc, "ptr")["status"] == "fail"
    assert only(doc, "fcrdns")["status"] == "fail"
    _, doc = check(world, "good.test", ip="192.0.2.67")  # PTR name points elsewhere
    assert only(doc, "ptr")["status"] == "pass"
    assert only(doc, "fcrdns")["status"] == "fail"
    assert "unconfirmed.relay.test" in only(doc, "fcrdns")["message"]
    p, doc = check(world, "good.test", ip="198.51.100.7")  # outside the SPF record
    assert only(doc, "spf-authorized")["status"] == "fail"
    assert "ip4:198.51.100.7" in only(doc, "spf-authorized")["fix"]
    p, doc = check(world, "good.test", ip=None)
    assert not {"ptr", "fcrdns", "spf-authorized"} & set(statuses(doc))
    assert p.returncode == 0


def test_upstream_include(world):
    env = {"SLUICE_UPSTREAM_SG_HOST": "smtp.sendgrid.net"}
    p, doc = check(world, "sendgrid.test", env=env, ip=None)
    assert only(doc, "spf-authorized")["status"] == "pass"
    assert p.returncode == 0
    p, doc = check(world, "good.test", env=env, ip=None)
    f = only(doc, "spf-authorized")
    assert f["status"] == "fail" and "include:sendgrid.net" in f["fix"]
    assert p.returncode == 4


@pytest.mark.parametrize("how", ["redirect", "html", "missing", "big"])
def test_policy_fetch_rules(world, how):
    """RFC 8461 3.3: no redirects, 200 only, text/plain only, bounded size."""
    p, doc = check(world, "good.test", how=how)
    f = only(doc, "mta-sts-policy")
    assert f["status"] == "fail", f
    assert "mta-sts-mx" not in statuses(doc)
    assert p.returncode == 4


def test_policy_needs_trusted_certificate(world):
    cmd = [SLUICE, "check-domain", "good.test", "--dns-zone", str(world["zone"]), "--json",
           "--mta-sts-url-base", world["server"].base()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=world["tmp"],
                       env=clean_env(SLUICE_DKIM_KEY_DIR=str(world["keys"])))
    f = only(json.loads(p.stdout), "mta-sts-policy")
    assert f["status"] == "fail" and "certificate" in f["message"].lower(), f


def test_bad_usage(world):
    assert subprocess.run([SLUICE, "check-domain"], capture_output=True).returncode == 2
    p = subprocess.run([SLUICE, "check-domain", "not a domain", "--dns-zone", str(world["zone"])],
                       capture_output=True, text=True, env=clean_env())
    assert p.returncode == 2 and "domain" in p.stderr


# ---- dns-records ------------------------------------------------------------------------

INFRA = """# the domain's own mail servers (not something dns-records manages)
rt.test              MX    10 mx1.rt.test
mx1.rt.test          A     192.0.2.25
_25._tcp.mx1.rt.test TLSA  3 1 1 dafc7ac7359214604b31405b3591968b719ec8867a98d0174835539555bd5e4a
_25._tcp.mx1.rt.test SECURE
"""


def records(world, keys, *args, env=None):
    p = subprocess.run([SLUICE, "dns-records", *args], capture_output=True, text=True, timeout=60,
                       cwd=world["tmp"], env=clean_env(SLUICE_DKIM_KEY_DIR=str(keys), **(env or {})))
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("strict", [False, True])
def test_dns_records_round_trip(world, tmp_path, strict):
    """dns-records output loaded into a zone makes check-domain pass."""
    keys = tmp_path / "keys"
    keygen(keys, "rt.test", "s2048", alg="rsa")  # 2048-bit: the record needs two strings
    keygen(keys, "rt.test", "ed", alg="ed25519")
    infra = tmp_path / "infra.zone"
    infra.write_text(INFRA + (ZONES / "common.zone").read_text())
    env = {"SLUICE_UPSTREAM_SG_HOST": "smtp.sendgrid.net"}
    extra = ["--dmarc-policy", "reject", "--mta-sts-mode", "enforce"] if strict else []
    bind = records(world, keys, "--dns-zone", str(infra), "--sending-ip", SENDING_IP, *extra,
                   env=env)
    doc = json.loads(records(world, keys, "--dns-zone", str(infra), "--sending-ip", SENDING_IP,
                             "--format", "json", *extra, env=env))
    (dom,) = doc["domains"]
    assert dom["domain"] == "rt.test"
    by_name = {r["name"]: r for r in dom["records"]}
    assert by_name["rt.test"]["value"] == "v=spf1 include:sendgrid.net ip4:192.0.2.10 ~all"
    assert all(len(s) <= 255 for r in dom["records"] for s in r["strings"])
    assert len(by_name["s2048._domainkey.rt.test"]["strings"]) == 2
    assert by_name["_dmarc.rt.test"]["value"] == (
        f"v=DMARC1; p={'reject' if strict else 'none'}; rua=mailto:dmarc-reports@rt.test")
    assert "mx: mx1.rt.test\r\n" in dom["mta_sts_policy"]["body"]
    # the bind text carries the same records, one line each
    for r in dom["records"]:
        line = f"{r['name']}. TXT " + " ".join(
            '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in r["strings"])
        assert line in bind.splitlines(), line

    zone = tmp_path / "rt.zone"
    zone.write_text(infra.read_text() + bind)
    world["server"].policies["rt.test"] = dom["mta_sts_policy"]["body"]
    cmd = [SLUICE, "check-domain", "rt.test", "--dns-zone", str(zone), "--json",
           "--sending-ip", SENDING_IP, "--mta-sts-url-base", world["server"].base(),
           "--ca-file", str(world["certs"] / "ca.pem")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=world["tmp"],
                       env=clean_env(SLUICE_DKIM_KEY_DIR=str(keys), **env))
    got = json.loads(p.stdout)
    not_pass = {f["check"]: f["status"] for f in got["findings"] if f["status"] != "pass"}
    if strict:
        assert not_pass == {} and p.returncode == 0, got
    else:
        # the documented starting point: report-only DMARC and MTA-STS
        assert not_pass == {"dmarc-policy": "warn", "mta-sts-policy": "warn"}, got
        assert p.returncode == 5
    checks = statuses(got)
    assert checks["dkim-key-match"] == ["pass", "pass"]  # both selectors
    assert checks["spf-authorized"] == ["pass", "pass"]  # sending IP and the upstream


def test_dns_records_defaults_and_providers(world, tmp_path):
    keys = tmp_path / "keys"
    keygen(keys, "b.test")
    keygen(keys, "a.test")
    env = {"SLUICE_UPSTREAM_SES_HOST": "email-smtp.eu-west-1.amazonaws.com",
           "SLUICE_UPSTREAM_MG_HOST": "smtp.mailgun.org",
           "SLUICE_UPSTREAM_OWN_HOST": "relay.example.net",
           "SLUICE_UPSTREAM_IP_HOST": "203.0.113.9"}
    doc = json.loads(records(world, keys, "--format", "json", "--dns-zone",
                             str(ZONES / "common.zone"), env=env))
    assert [d["domain"] for d in doc["domains"]] == ["a.test", "b.test"]
    spf = doc["domains"][0]["records"][0]
    assert spf["name"] == "a.test"
    for term in ("include:amazonses.com", "include:mailgun.org", "a:relay.example.net",
                 "ip4:203.0.113.9"):
        assert f" {term} " in spf["value"], spf
    # no MX known: the policy names the domain's own hosts
    assert "mx: *.a.test\r\n" in doc["domains"][0]["mta_sts_policy"]["body"]
    # no keys and no --domain: an error that says what to do
    p = subprocess.run([SLUICE, "dns-records"], capture_output=True, text=True,
                       env=clean_env(SLUICE_DKIM_KEY_DIR=str(tmp_path / "none")))
    assert p.returncode == 3 and "--domain" in p.stderr


# ---- verify --client-ip: SPF and DMARC ----------------------------------------------------

MESSAGE = ("From: Alice <alice@{d}>\nTo: bob@example.net\nSubject: hi\n"
           "Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <1@{d}>\n\nHello.\n")


def verify(world, path, *args):
    p = subprocess.run([SLUICE, "verify", str(path), "--dns-zone", str(world["zone"]),
                        "--authserv-id", "mx.test", "--json", *args],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    return p.returncode, json.loads(p.stdout) if p.stdout else None


@pytest.fixture(scope="module")
def messages(world):
    out = {}
    for d in ("good.test", "dmarcnone.test", "nospf.test"):
        plain = world["tmp"] / f"{d}.eml"
        plain.write_text(MESSAGE.format(d=d))
        signed = world["tmp"] / f"{d}.signed.eml"
        p = subprocess.run([SLUICE, "dkim", "sign", "--key",
                            str(world["keys"] / f"s1._domainkey.{d}.key"), "--domain", d,
                            "--selector", "s1"], input=plain.read_text(), capture_output=True,
                           text=True, timeout=60, env=clean_env())
        assert p.returncode == 0, p.stderr
        signed.write_text(p.stdout)
        out[d] = (plain, signed)
    return out


def test_verify_spf_and_dmarc_pass(world, messages):
    rc, doc = verify(world, messages["good.test"][1], "--client-ip", SENDING_IP,
                     "--helo", "out.relay.test", "--mail-from", "bounce@good.test")
    assert rc == 0
    # header.b is a token unless the signature prefix holds a tspecial such
    # as '/' (RFC 2045 5.1), then a quoted string (RFC 8601 2.2)
    b = doc['signatures'][0]['header_b']
    b = b if not set(b) & set('()<>@,;:\\"/[]?=') else f'"{b}"'
    assert doc["authentication_results"] == (
        f"mx.test; dkim=pass header.d=good.test header.s=s1 header.a=ed25519-sha256 "
        f"header.b={b}; spf=pass smtp.mailfrom=bounce@good.test; "
        "dmarc=pass (p=reject dis=none) header.from=good.test")
    assert doc["spf"]["result"] == "pass" and doc["spf"]["identity"] == "mailfrom"
    d = doc["dmarc"]
    assert (d["result"], d["policy"], d["disposition"]) == ("pass", "reject", "none")
    assert d["spf_aligned"] and d["dkim_aligned"]


def test_verify_dkim_alone_carries_dmarc(world, messages):
    # the relay's address is not in SPF (a smarthost's bounce domain), DKIM is aligned
    rc, doc = verify(world, messages["good.test"][1], "--client-ip", "198.51.100.9",
                     "--helo", "smtp.provider.example", "--mail-from", "bounce@provider.example")
    assert doc["spf"]["result"] == "none"
    assert doc["dmarc"]["result"] == "pass" and not doc["dmarc"]["spf_aligned"]
    assert rc == 0


def test_verify_dmarc_fail_and_policy(world, messages):
    rc, doc = verify(world, messages["good.test"][0], "--client-ip", "198.51.100.9",
                     "--helo", "x.example", "--mail-from", "alice@good.test")
    assert doc["spf"]["result"] == "fail" and doc["result"] == "none"
    assert (doc["dmarc"]["result"], doc["dmarc"]["disposition"]) == ("fail", "reject")
    assert "dmarc=fail (p=reject dis=reject) header.from=good.test" in doc["authentication_results"]
    assert rc == 4
    rc, doc = verify(world, messages["dmarcnone.test"][0], "--client-ip", "198.51.100.9",
                     "--helo", "x.example", "--mail-from", "alice@dmarcnone.test")
    assert (doc["dmarc"]["result"], doc["dmarc"]["policy"], doc["dmarc"]["disposition"]) == (
        "fail", "none", "none")
    assert rc == 4


def test_verify_helo_identity_and_no_dmarc(world, messages):
    # empty MAIL FROM: SPF checks the HELO name; good.test's record covers 192.0.2.10
    rc, doc = verify(world, messages["good.test"][0], "--client-ip", SENDING_IP,
                     "--helo", "good.test", "--mail-from", "")
    assert doc["spf"]["identity"] == "helo" and doc["spf"]["result"] == "pass"
    assert "spf=pass smtp.helo=good.test" in doc["authentication_results"]
    assert doc["dmarc"]["result"] == "pass" and rc == 0
    # a From domain without any DMARC record: none, exit 1
    msg = world["tmp"] / "nodmarc.eml"
    msg.write_text(MESSAGE.format(d="example.org"))
    rc, doc = verify(world, msg, "--client-ip", SENDING_IP, "--helo", "out.relay.test")
    assert doc["dmarc"]["result"] == "none" and doc["dmarc"]["from_domain"] == "example.org"
    assert "dmarc=none header.from=example.org" in doc["authentication_results"]
    assert rc == 5


def test_verify_option_errors(world, messages):
    path = messages["good.test"][0]
    assert verify(world, path, "--helo", "x.example")[0] == 2          # --helo without --client-ip
    assert verify(world, path, "--client-ip", "300.1.1.1", "--helo", "x")[0] == 2
    assert verify(world, path, "--client-ip", SENDING_IP)[0] == 2      # no --helo
    # without the new options verify behaves as before (DKIM only, exit by DKIM)
    rc, doc = verify(world, messages["good.test"][1])
    assert rc == 0 and "spf" not in doc and "dmarc" not in doc
