"""The benchmark load generator (bench/loadgen.c) against a real relay: what it
reports as accepted must be exactly what the relay took and captured, and a
refusal must be counted by its reply code, never as an accepted message."""
import json
import os
import re
import subprocess
from pathlib import Path

from conftest import BIN, PASSWORD

LOADGEN = os.environ.get("SLUICE_LOADGEN", str(Path(BIN).parent / "sluice-loadgen"))


def loadgen(relay, *args):
    assert os.access(LOADGEN, os.X_OK), f"no load generator at {LOADGEN} (built with the project)"
    r = subprocess.run([LOADGEN, "--host", "127.0.0.1", "--json", "--from", "app@bench.test",
                        "--to", "sink@example.net", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip(), f"no report (exit {r.returncode}): {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def relay_with_creds(make_sluice):
    s = make_sluice()
    s.cli("creds", "add", "--init", "app", "--password", "--allow-from", "*@bench.test", input=PASSWORD + "\n")
    key = json.loads(s.cli("creds", "add", "--init", "api", "--api-key", "--json",
                           "--allow-from", "*@bench.test").stdout)["api_key"]
    return s.start(), key


def message_ids(msgs):
    out = []
    for m in msgs:
        found = re.search(rb"^Message-ID: <loadgen\.[0-9a-f]{8}\.([0-9]{10})@bench\.test>",
                          m["data"], re.M)
        assert found, m["data"][:400]
        out.append(int(found.group(1)))
    return sorted(out)


def test_starttls_auth_count_matches_captured(make_sluice):
    s, _ = relay_with_creds(make_sluice)
    rc, rep = loadgen(s, "--port", str(s.port), "--tls", "starttls",
                      "--cafile", str(s.var / "tls" / "cert.pem"), "--sni", "relay.test",
                      "--auth", f"app:{PASSWORD}", "-c", "3", "-n", "12", "--size", "4096")
    assert rc == 0, rep
    assert (rep["tried"], rep["accepted"], rep["failed"]) == (12, 12, 0), rep
    assert rep["tls_handshakes"] == 12 and rep["connections"] == 12
    msgs = s.wait_captured(12)
    assert len(msgs) == rep["accepted"]
    assert message_ids(msgs) == list(range(1, 13))  # each message once, none lost
    assert 4096 <= len(msgs[0]["data"]) < 4096 + 1024  # --size plus the relay's trace fields
    lat = rep["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert rep["cpu_s"] > 0


def test_implicit_tls_api_key_pipelining_resumption(make_sluice):
    s, key = relay_with_creds(make_sluice)
    rc, rep = loadgen(s, "--port", str(s.tls_port), "--tls", "implicit", "--insecure", "--resume",
                      "--auth", f"api:{key}", "--pipelining", "--per-connection", "3",
                      "-c", "1", "-n", "9")
    assert rc == 0, rep
    assert rep["accepted"] == 9 and rep["connections"] == 3, rep
    assert rep["tls_resumed"] == 2, rep  # the 2nd and 3rd offered the ticket of the one before
    assert len(s.wait_captured(9)) == 9


def test_refusals_are_counted_by_code_not_as_accepted(make_sluice):
    s, _ = relay_with_creds(make_sluice)
    rc, rep = loadgen(s, "--port", str(s.port), "--tls", "starttls", "--insecure",
                      "--auth", "app:not the password", "-c", "2", "-n", "4")
    assert rc == 1
    assert (rep["accepted"], rep["failed"]) == (0, 4), rep
    assert rep["errors"]["5xx"] == 4 and rep["reply_codes"] == {"535": 4}, rep
    # a sender the credential may not use: refused at MAIL, nothing spooled
    rc, rep = loadgen(s, "--port", str(s.port), "--tls", "starttls", "--insecure",
                      "--auth", f"app:{PASSWORD}", "--from", "x@elsewhere.example", "-n", "2")
    assert rc == 1 and rep["accepted"] == 0 and rep["errors"]["5xx"] == 2, rep
    assert s.captured() == []
