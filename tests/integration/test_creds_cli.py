"""Black-box tests of `sluice creds` and `sluice stats` with the real binary:
secrets never in argv or in the store in clear, API keys shown once, SCRAM
keys in the store checked with Python's own PBKDF2/HMAC, certificate
fingerprints checked with Python's ssl module, exit codes, --json output."""
import base64
import hashlib
import hmac
import json
import os
import re
import sqlite3
import ssl
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SLUICE_BIN", str(ROOT / "build" / "sluice"))
PASSWORD = "correct horse battery"
KEY_RE = re.compile(r"sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")

CERT_PEM = """-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUZFdqOSAzYR0xQQl39dMmGGDd0WkwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQYXBwLnNob3AuZXhhbXBsZTAgFw0yNjExMjYwOTE1MzhaGA8y
MTI2MTEwMjA5MTUzOFowGzEZMBcGA1UEAwwQYXBwLnNob3AuZXhhbXBsZTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABKgtf6HZd/Hg92SIZMCNbHbJjqovhnjDn7vQ
SboUVn1anxSUl8siCKeGmQIP3Czda9Fh3HzDMTBkZq2S1x2YKKCjUzBRMB0GA1Ud
DgQWBBSkHW8IlVZBq5Ev1DydGJjsJdQIEDAfBgNVHSMEGDAWgBSkHW8IlVZBq5Ev
1DydGJjsJdQIEDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIAZ1
PaChaAh7tDK7TDrBrir+ITJGBU5Gdd/90aIddalGAiEA3TMAiEjTG4aJimzp63Jv
J9rwKv3ZAouX6oVMp9eE1xs=
-----END CERTIFICATE-----
"""


class Cli:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.db = workdir / "var" / "sluice.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        self.env["SLUICE_SERVER_VAR_DIR"] = str(workdir / "var")

    def run(self, *args, input=None):
        return subprocess.run([BIN, *args], env=self.env, cwd=self.dir, input=input,
                              capture_output=True, text=True, timeout=60)

    def ok(self, *args, input=None):
        r = self.run(*args, input=input)
        assert r.returncode == 0, f"sluice {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def json(self, *args, input=None):
        return json.loads(self.ok(*args, "--json", input=input).stdout)

    def sql(self, query, *params):
        with sqlite3.connect(self.db) as c:
            return c.execute(query, params).fetchall()


@pytest.fixture
def cli(tmp_path):
    c = Cli(tmp_path)
    probe = c.run("creds", "list", "--init")
    if "unknown command" in probe.stderr:
        pytest.skip(f"{BIN} has no 'creds' command")
    assert probe.returncode == 0, probe.stderr
    return c


def scram_keys(password, salt, iterations):
    """RFC 5802 section 3, independently of the C code."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored, server


def test_store_schema(cli):
    assert cli.db.exists()
    assert cli.sql("PRAGMA journal_mode") == [("wal",)]
    (version,), = cli.sql("SELECT version FROM schema_version")
    assert version >= 4
    tables = {r[0] for r in cli.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"creds", "cred_patterns", "accounting", "generation", "schema_version"} <= tables


def test_add_password_from_stdin(cli):
    j = cli.json("creds", "add", "shop", "--password", "--allow-from", "*@shop.example",
                 "--allow-from", "*@*.shop.example", "--allow-rcpt", "*@customers.example",
                 "--rate", "100/min", "--quota", "10000/day", "--max-size", "10M",
                 input=PASSWORD + "\n")
    assert j["name"] == "shop"
    assert j["kinds"] == ["password", "scram-sha-256"]
    assert sorted(j["allow_from"]) == ["*@*.shop.example", "*@shop.example"]
    assert j["allow_rcpt"] == ["*@customers.example"]
    assert (j["rate"], j["quota"], j["max_size"]) == ("100/min", "10000/day", 10 * 1024 * 1024)
    assert j["revoked"] is False and re.match(r"\d{4}-\d\d-\d\dT", j["created"])
    assert "api_key" not in j
    # Stored as argon2id and SCRAM keys, never in clear.
    (h, salt, it, stored, server), = cli.sql(
        "SELECT password_hash, scram_salt, scram_iterations, scram_stored_key,"
        " scram_server_key FROM creds WHERE name = 'shop'")
    assert h.startswith("$argon2id$")
    assert PASSWORD.encode() not in cli.db.read_bytes()
    assert it >= 4096 and len(salt) >= 16
    assert (stored, server) == scram_keys(PASSWORD, salt, it)
    # Passwords never on the command line.
    r = cli.run("creds", "add", "x", "--password=secret123")
    assert r.returncode == 2 and "stdin" in r.stderr
    r = cli.run("creds", "add", "y", "--password", input="")
    assert r.returncode == 2 and "no password" in r.stderr
    r = cli.run("creds", "add", "y", "--password", input="short\n")
    assert r.returncode == 2 and "too short" in r.stderr


def test_api_key_shown_once(cli):
    r = cli.ok("creds", "add", "api", "--api-key", "--allow-from", "noreply@shop.example")
    keys = KEY_RE.findall(r.stdout)
    assert len(keys) == 1
    key = keys[0]
    secret = key.split("_", 2)[2]
    assert secret.encode() not in cli.db.read_bytes()
    show = cli.ok("creds", "show", "api").stdout + cli.ok("creds", "list", "--json").stdout
    assert secret not in show
    assert key[3:15] in show  # the public id is shown
    (kid, kh), = cli.sql("SELECT api_key_id, api_key_hash FROM creds WHERE name = 'api'")
    assert kid == key[3:15] and kh.startswith("$hmac-sha256$v=1$")
    # Rotation makes a new key, shown once; the id changes with it.
    j = cli.json("creds", "rotate", "api")
    assert KEY_RE.fullmatch(j["api_key"]) and j["api_key"] != key
    (kid2,), = cli.sql("SELECT api_key_id FROM creds WHERE name = 'api'")
    assert kid2 == j["api_key"][3:15]
    assert cli.json("creds", "show", "api")["rotated"] is not None


def test_cert_from_pem_and_hex(cli):
    pem = cli.dir / "client.pem"
    pem.write_text(CERT_PEM)
    want = hashlib.sha256(ssl.PEM_cert_to_DER_cert(CERT_PEM)).hexdigest()
    j = cli.json("creds", "add", "mtls", "--cert", str(pem))
    assert j["kinds"] == ["cert"] and j["cert_sha256"] == want
    # The same certificate cannot belong to two credentials.
    colons = ":".join(want[i:i + 2] for i in range(0, 64, 2)).upper()
    r = cli.run("creds", "add", "mtls2", "--cert", colons)
    assert r.returncode == 1 and "certificate" in r.stderr  # taken: "exists"
    j = cli.json("creds", "add", "mtls3", "--cert", "ab" * 32)
    assert j["cert_sha256"] == "ab" * 32
    r = cli.run("creds", "add", "mtls4", "--cert", str(cli.dir / "missing.pem"))
    assert r.returncode == 2


def test_list_show_revoke_rotate(cli):
    assert cli.json("creds", "list") == {"creds": []}
    assert "no credentials" in cli.ok("creds", "list").stdout
    cli.ok("creds", "add", "b-app", "--password", input=PASSWORD + "\n")
    cli.ok("creds", "add", "a-app", "--api-key", "--password", input=PASSWORD + "\n")
    names = [c["name"] for c in cli.json("creds", "list")["creds"]]
    assert names == ["a-app", "b-app"]
    out = cli.ok("creds", "list").stdout
    assert "a-app" in out and "b-app" in out and "active" in out

    # Rotate a password: new SCRAM keys for the new password.
    (salt0,), = cli.sql("SELECT scram_salt FROM creds WHERE name = 'b-app'")
    cli.ok("creds", "rotate", "b-app", input="a brand new password\n")
    (salt, it, stored, server), = cli.sql(
        "SELECT scram_salt, scram_iterations, scram_stored_key, scram_server_key"
        " FROM creds WHERE name = 'b-app'")
    assert salt != salt0
    assert (stored, server) == scram_keys("a brand new password", salt, it)
    # With both kinds the operator must choose.
    r = cli.run("creds", "rotate", "a-app")
    assert r.returncode == 2 and "--password or --api-key" in r.stderr

    gen = cli.sql("SELECT value FROM generation")[0][0]
    assert cli.json("creds", "revoke", "b-app") == {"name": "b-app", "revoked": True}
    assert cli.sql("SELECT value FROM generation")[0][0] > gen
    assert cli.json("creds", "show", "b-app")["revoked"] is True
    assert "REVOKED" in cli.ok("creds", "show", "b-app").stdout
    r = cli.run("creds", "rotate", "b-app", input="yet another password\n")
    assert r.returncode == 2 and "revoked" in r.stderr

    for verb in ("show", "revoke", "rotate", "delete"):
        r = cli.run("creds", verb, "nobody", "--json")
        assert r.returncode == 3, verb
        err = json.loads(r.stdout)["error"]
        assert err["code"] == "not_found" and "nobody" in err["message"]
    cli.ok("creds", "delete", "a-app")
    assert [c["name"] for c in cli.json("creds", "list")["creds"]] == ["b-app"]
    assert cli.sql("SELECT count(*) FROM cred_patterns") == [(0,)]


@pytest.mark.parametrize("args, message", [
    (["--allow-from", "*@*"], "pattern"),
    (["--allow-from", "no*reply@shop.example"], "pattern"),
    (["--allow-rcpt", "shop.example"], "pattern"),
    (["--rate", "100"], "--rate"),
    (["--quota", "100/min"], "quota"),
    (["--max-size", "ten"], "--max-size"),
    (["--bogus"], "unknown option"),
    ([], "--password, --api-key or --cert"),
])
def test_add_rejects(cli, args, message):
    r = cli.run("creds", "add", "bad", "--api-key" if args else "--json", *args)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr
    assert KEY_RE.search(r.stdout) is None
    assert cli.sql("SELECT count(*) FROM creds") == [(0,)]


def test_usage_and_duplicates(cli):
    assert cli.run("creds").returncode == 2
    assert cli.run("creds", "frobnicate", "x").returncode == 2
    assert cli.run("creds", "show").returncode == 2
    assert cli.run("creds", "add", "bad name", "--api-key").returncode == 2
    cli.ok("creds", "add", "dup", "--api-key")
    r = cli.run("creds", "add", "dup", "--api-key", "--json")
    err = json.loads(r.stdout)["error"]
    assert r.returncode == 1 and err["code"] == "exists" and "exists" in err["message"]
    assert KEY_RE.search(r.stdout) is None


def test_stats(cli):
    import datetime
    today = datetime.datetime.now(datetime.timezone.utc).date()
    old = today - datetime.timedelta(days=30)
    rows = [
        ("shop", today, "accepted", "", 10, 10000),
        ("shop", today, "delivered", "", 9, 9000),
        ("shop", today, "deferred", "", 2, 0),
        ("shop", today, "rejected", "rate", 3, 0),
        ("shop", today, "rejected", "quota", 1, 0),
        ("shop", old, "accepted", "", 100, 1),
        ("news", today, "accepted", "", 5, 50),
        ("news", today, "bounced", "", 1, 0),
    ]
    with sqlite3.connect(cli.db) as c:
        c.executemany("INSERT INTO accounting VALUES (?, ?, ?, ?, ?, ?)",
                      [(a, d.isoformat(), e, r, n, b) for a, d, e, r, n, b in rows])
    j = cli.json("stats")
    assert j["since"] == (today - datetime.timedelta(days=6)).isoformat()
    by = {c["name"]: c for c in j["creds"]}
    assert set(by) == {"news", "shop"}
    s = by["shop"]
    assert (s["accepted"], s["delivered"], s["deferred"], s["bounced"], s["rejected"]) == \
        (10, 9, 2, 0, 4)
    assert s["bytes"] == 10000 and s["bytes_delivered"] == 9000
    assert s["rejected_by_reason"] == {"rate": 3, "quota": 1}
    assert s["days"][today.isoformat()]["accepted"] == 10
    assert by["news"]["bounced"] == 1

    j = cli.json("stats", "--cred", "shop", "--since", "60d")
    assert [c["name"] for c in j["creds"]] == ["shop"] and j["creds"][0]["accepted"] == 110
    j = cli.json("stats", "--since", old.isoformat())
    assert {c["name"]: c["accepted"] for c in j["creds"]} == {"shop": 110, "news": 5}
    assert cli.json("stats", "--cred", "nobody")["creds"] == []

    out = cli.ok("stats").stdout
    line = next(l for l in out.splitlines() if l.startswith("shop"))
    assert line.split() == ["shop", "10", "9", "2", "0", "4", "10000"]
    assert re.search(r"rejected: rate\s+3", out)
    r = cli.run("stats", "--since", "yesterday")
    assert r.returncode == 2 and "--since" in r.stderr
    assert cli.run("stats", "extra").returncode == 2
