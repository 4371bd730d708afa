"""`sluice audit verify` against audit logs written by an independent Python
implementation of the documented format (docs/OBSERVABILITY.md): a clean
chain verifies, and every kind of tampering is reported at the right record
with exit status 2."""
import hashlib
import hmac
import json
import os
import subprocess

import pytest

from conftest import BIN

ZERO = "0" * 64
KEY = b"integration-audit-key"


def make_record(seq, prev, event, fields, key=None, prev_file=None):
    obj = {"seq": seq, "ts": f"2024-05-01T12:00:{seq % 60:02d}.000Z", "event": event,
           "alg": "hmac-sha256" if key else "sha256", "prev": prev}
    if prev_file is not None:
        obj["prev_file"] = prev_file
    obj.update(fields)
    prefix = json.dumps(obj, separators=(",", ":"))[:-1]
    if key:
        h = hmac.new(key, prefix.encode(), hashlib.sha256).hexdigest()
    else:
        h = hashlib.sha256(prefix.encode()).hexdigest()
    return prefix + ',"hash":"' + h + '"}\n', h


def make_chain(n, key=None, start=1, prev=ZERO, prev_file=None):
    lines = []
    for seq in range(start, start + n):
        line, prev = make_record(seq, prev, "auth.failure",
                                 {"user": "alice", "client_ip": f"192.0.2.{seq}"}, key,
                                 prev_file if seq == start else None)
        lines.append(line)
    return lines, prev


def verify(*args):
    return subprocess.run([BIN, "audit", "verify", *map(str, args), "--json"],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(autouse=True)
def has_audit_command():
    probe = subprocess.run([BIN, "audit", "--help"], capture_output=True, text=True)
    if "unknown command" in probe.stderr:
        pytest.skip(f"{BIN} has no 'audit' command")


def result(r, code):
    assert r.returncode == code, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_clean_chain_verifies(tmp_path):
    log = tmp_path / "audit.log"
    lines, last = make_chain(6)
    log.write_text("".join(lines))
    out = result(verify(log), 0)
    assert out["ok"] is True
    assert out["records"] == 6
    assert out["last_seq"] == 6
    assert out["last_hash"] == last


def test_text_output_names_the_record(tmp_path):
    log = tmp_path / "audit.log"
    lines, _ = make_chain(4)
    lines[2] = lines[2].replace("alice", "alicf")
    log.write_text("".join(lines))
    r = subprocess.run([BIN, "audit", "verify", str(log)], capture_output=True, text=True)
    assert r.returncode == 4
    assert f"{log}:3 seq 3: edited" in r.stdout


@pytest.mark.parametrize("tamper, problem, line, seq", [
    ("edit", "edited", 3, 3),
    ("delete", "removed", 3, 4),
    ("swap", "reordered", 3, 4),
    ("truncate", "truncated", 6, None),
    ("drop_first", "removed", 1, 2),
    ("garbage", "bad_json", 4, None),
    ("rehash", "broken_link", 4, 4),
])
def test_tampering_is_found(tmp_path, tamper, problem, line, seq):
    lines, _ = make_chain(6)
    if tamper == "edit":
        lines[2] = lines[2].replace("192.0.2.3", "192.0.2.9")
    elif tamper == "delete":
        del lines[2]
    elif tamper == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "truncate":
        lines[5] = lines[5][:-15]
    elif tamper == "drop_first":
        del lines[0]
    elif tamper == "garbage":
        lines[3] = "this is not json\n"
    elif tamper == "rehash":
        # Without a key, a forger can re-hash the record he changed; the
        # next record's link gives it away.
        prev = json.loads(lines[1])["hash"]
        lines[2], _ = make_record(3, prev, "auth.failure",
                                  {"user": "mallory", "client_ip": "192.0.2.3"})
    log = tmp_path / "audit.log"
    log.write_text("".join(lines))
    out = result(verify(log), 4)
    assert out["ok"] is False
    assert out["problem"] == problem, out
    assert out["line"] == line, out
    assert out["seq"] == seq, out
    assert out["file"] == str(log)


def test_keyed_chain(tmp_path):
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")
    log = tmp_path / "audit.log"
    lines, _ = make_chain(4, key=KEY)
    log.write_text("".join(lines))
    assert result(verify(log, "--key-file", key_file), 0)["records"] == 4
    # No key: the verifier says a key is needed rather than "edited".
    assert result(verify(log), 4)["problem"] == "key_mismatch"
    # A forger without the key re-hashes a changed record with a key of his own.
    prev = json.loads(lines[0])["hash"]
    lines[1], _ = make_record(2, prev, "auth.failure",
                              {"user": "mallory", "client_ip": "192.0.2.2"}, key=b"guess")
    log.write_text("".join(lines))
    out = result(verify(log, "--key-file", key_file), 4)
    assert (out["problem"], out["line"], out["seq"]) == ("edited", 2, 2)


def test_rotated_files_in_order(tmp_path):
    old_lines, last = make_chain(3)
    new_lines, _ = make_chain(2, start=4, prev=last, prev_file="audit.log.1")
    old, new = tmp_path / "audit.log.1", tmp_path / "audit.log"
    old.write_text("".join(old_lines))
    new.write_text("".join(new_lines))
    out = result(verify(old, new), 0)
    assert (out["records"], out["first_seq"], out["last_seq"]) == (5, 1, 5)
    alone = result(verify(new), 0)
    assert alone["continues_from"] == "audit.log.1"
    wrong = result(verify(new, old), 4)
    assert (wrong["problem"], wrong["file"], wrong["line"]) == ("reordered", str(old), 1)
    # The last record of the old file removed: the new file's link breaks.
    old.write_text("".join(old_lines[:-1]))
    broken = result(verify(old, new), 4)
    assert (broken["problem"], broken["file"], broken["line"]) == ("removed", str(new), 1)


def test_usage(tmp_path):
    # without FILE: the configured [audit] file, here ./var/audit.log, absent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    r = subprocess.run([BIN, "audit", "verify"], capture_output=True, text=True, cwd=tmp_path,
                       env=env)
    assert r.returncode == 3
    assert "var/audit.log" in r.stderr
    r = subprocess.run([BIN, "audit", "verify", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run([BIN, "audit", "verify", str(tmp_path / "missing.log")],
                       capture_output=True, text=True)
    assert r.returncode == 3
    (tmp_path / "empty.log").write_text("")
    r = subprocess.run([BIN, "audit", "verify", str(tmp_path / "empty.log"), "--key-file",
                        str(tmp_path / "nokey")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "key file" in r.stderr
