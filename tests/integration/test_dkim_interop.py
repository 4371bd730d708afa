"""DKIM interoperability between the sluice binary and dkimpy (python3-dkim).

Every message Sluice signs must verify with dkimpy, every message dkimpy signs
must verify with `sluice verify`, for RSA and Ed25519 and for each
canonicalisation; tampered copies must fail in both. Keys are made with
`sluice dkim keygen` in a temporary directory.

Run with /usr/bin/python3 -m pytest; SLUICE_BIN names the binary (default
build/sluice under the repository root).
"""

import base64
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import dkim
import pytest

REPO = Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(REPO / "build" / "sluice"))
DOMAIN = "example.org"
CANONS = ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]
ALGS = ["rsa", "ed25519"]


def run(args, stdin=None, check=None):
    p = subprocess.run([SLUICE] + args, input=stdin, capture_output=True, timeout=60)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stderr.decode(errors="replace"))
    return p


def crlf(text):
    if isinstance(text, str):
        text = text.encode("utf-8")
    return re.sub(rb"(?<!\r)\n", b"\r\n", text)


# name -> message (CRLF line ends)
CORPUS = {
    "plain": crlf(
        "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: hello\n"
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <a1@example.org>\n\nHi Bob.\n"
    ),
    "folded_repeated": crlf(
        "Received: from a by b; Tue, 14 Nov 2023 22:13:20 +0000\n"
        "Received: from c\n\tby d; Tue, 14 Nov 2023 22:13:21 +0000\n"
        "From: Alice <alice@example.org>\n"
        "To: bob@example.net,\n  carol@example.net,\n\tdave@example.net\n"
        "Cc: eve@example.net\nCc: frank@example.net\n"
        "Subject: a subject that is\n folded over\n\t three lines\n"
        "MIME-Version: 1.0\nContent-Type: text/plain;\n charset=us-ascii\n\nbody\n"
    ),
    "odd_whitespace": crlf(
        "From:   Alice   <alice@example.org>   \nTo:\tbob@example.net\t\n"
        "Subject:no space  \t here\nX-Empty:\n\n"
        "  leading spaces\nline with trailing spaces   \n\t\ttabs\tinside\t\n"
        "   \nmiddle\n \t \nend\n"
    ),
    "empty_body": crlf("From: alice@example.org\nTo: bob@example.net\nSubject: empty\n\n"),
    "no_body_separator": crlf("From: alice@example.org\nSubject: headers only\n"),
    "trailing_blank_lines": crlf(
        "From: alice@example.org\nSubject: trailing\n\ntext\n\n\n\n  \n\n"
    ),
    "long_lines": crlf(
        "From: alice@example.org\nSubject: " + "long " * 150 + "\n"
        "References: " + "\n ".join("<%d@example.org>" % i for i in range(60)) + "\n\n"
        + "x" * 998 + "\n" + ("word " * 199).rstrip() + "\n"
    ),
    "eight_bit": b"From: alice@example.org\r\nSubject: =?iso-8859-1?q?caf=E9?=\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 cr\xe8me br\xfbl\xe9e\r\n\xff\xfe\r\n",
    "utf8_smtputf8": crlf(
        "From: J\u00fcrgen <j\u00fcrgen@example.org>\nTo: \u7528\u6237@example.net\n"
        "Subject: Gr\u00fc\u00dfe \u2014 \U0001F600\nContent-Type: text/plain; charset=utf-8\n\n"
        "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435  \u4e16\u754c\n"
    ),
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    if not os.access(SLUICE, os.X_OK):
        pytest.fail("sluice binary not found at %s (build it or set SLUICE_BIN)" % SLUICE)
    d = tmp_path_factory.mktemp("dkimkeys")
    out = {}
    for alg in ALGS:
        sel = "s-" + alg
        p = run(["dkim", "keygen", "--domain", DOMAIN, "--selector", sel, "--algorithm", alg,
                 "--out", str(d), "--json"], check=0)
        info = json.loads(p.stdout)
        out[alg] = dict(info, selector=sel)
    zone = d / "zone.txt"
    with open(zone, "w") as f:
        f.write("# DKIM keys made by sluice dkim keygen\n")
        for alg in ALGS:
            strings = " ".join('"%s"' % s for s in out[alg]["strings"])
            f.write("%s TXT %s\n" % (out[alg]["name"], strings))
    out["zone"] = str(zone)
    out["dir"] = d
    return out


def dkimpy_verify(msg, keys):
    try:
        return dkim.verify(msg, dnsfunc=dnsfunc_for(keys))
    except dkim.DKIMException:
        return False


def dnsfunc_for(keys):
    records = {keys[a]["name"].encode(): keys[a]["value"].encode() for a in ALGS}

    def dnsfunc(name, timeout=5):
        if not name.endswith(b"."):
            name += b"."
        return records.get(name)

    return dnsfunc


def sluice_sign(keys, alg, canon, msg):
    k = keys[alg]
    p = run(["dkim", "sign", "--key", k["key_file"], "--domain", DOMAIN, "--selector",
             k["selector"], "--canon", canon], stdin=msg, check=0)
    return p.stdout


def sluice_verify(keys, path, extra=()):
    return run(["verify", str(path), "--json", "--dns-zone", keys["zone"]] + list(extra))


def tampered(signed):
    """Copies that must not verify: a signed header changed, the body changed,
    the signature value truncated."""
    head, sep, body = signed.partition(b"\r\n\r\n")
    if not sep:  # headers only: the tampered copy gains a body
        head = head[:-2] if head.endswith(b"\r\n") else head
        sep = b"\r\n\r\n"
    out = {}
    assert b"\r\nFrom:" in head
    out["header"] = head.replace(b"\r\nFrom:", b"\r\nFrom: Mallory <m@evil.example>,", 1) + sep + body
    out["body"] = head + sep + body + b"appended line\r\n"
    m = re.search(rb"[;\s]b=([A-Za-z0-9+/=\r\n \t]+)", head)
    assert m, head
    value = m.group(1)
    half = value[: len(value) // 2].rstrip(b"\r\n \t")
    out["signature"] = head.replace(value, half) + sep + body
    return out


def ed25519_seed_b64(pem_path):
    """dkimpy takes an Ed25519 key as its base64 seed: the last 32 bytes of the
    PKCS#8 DER written by keygen (RFC 8410 7)."""
    pem = Path(pem_path).read_text()
    der = base64.b64decode("".join(l for l in pem.splitlines() if "-----" not in l))
    assert len(der) == 48
    return base64.b64encode(der[-32:])


# ---- keygen -------------------------------------------------------------------------


def test_keygen_files_and_record(keys, tmp_path):
    for alg in ALGS:
        k = keys[alg]
        mode = os.stat(k["key_file"]).st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert k["name"] == "%s._domainkey.%s." % (k["selector"], DOMAIN)
        assert "".join(k["strings"]) == k["value"]
        assert all(len(s.encode()) <= 255 for s in k["strings"])
        assert k["value"].startswith("v=DKIM1; k=%s; p=" % alg)
    assert len(keys["rsa"]["strings"]) >= 2  # a 2048-bit key does not fit in one string
    # refuses to overwrite
    p = run(["dkim", "keygen", "--domain", DOMAIN, "--selector", keys["rsa"]["selector"],
             "--out", str(keys["dir"])])
    assert p.returncode == 1
    assert b"refusing to overwrite" in p.stderr
    # text output is BIND syntax with quoted strings
    p = run(["dkim", "keygen", "--domain", DOMAIN, "--selector", "txt", "--out", str(tmp_path)],
            check=0)
    text = p.stdout.decode()
    assert "txt._domainkey.example.org. IN TXT (" in text
    strings = re.findall(r'"([^"]*)"', text)
    assert all(len(s) <= 255 for s in strings) and "".join(strings).startswith("v=DKIM1; k=rsa;")
    # bad input is refused with exit 2
    assert run(["dkim", "keygen", "--domain", "bad domain", "--selector", "x",
                "--out", str(tmp_path)]).returncode == 2
    assert run(["dkim", "keygen", "--domain", DOMAIN, "--selector", "x", "--bits", "512",
                "--out", str(tmp_path)]).returncode == 2


# ---- sluice signs, dkimpy verifies ----------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_sluice_signs_dkimpy_verifies(keys, alg, canon, name, tmp_path):
    msg = CORPUS[name]
    signed = sluice_sign(keys, alg, canon, msg)
    assert signed.startswith(b"DKIM-Signature: v=1; a=%s-sha256; c=%s;" % (alg.encode(), canon.encode()))
    assert signed.endswith(msg)
    assert b" l=" not in signed.split(msg)[0]
    assert dkimpy_verify(signed, keys), (name, alg, canon)
    # our own verifier agrees
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    p = sluice_verify(keys, path)
    assert p.returncode == 0, p.stdout
    assert json.loads(p.stdout)["signatures"][0]["result"] == "pass"
    for kind, bad in tampered(signed).items():
        assert not dkimpy_verify(bad, keys), (name, alg, canon, kind)
        path.write_bytes(bad)
        p = sluice_verify(keys, path)
        assert p.returncode == 4, (kind, p.stdout)
        res = json.loads(p.stdout)["signatures"][0]["result"]
        assert res in ("fail", "permerror"), (kind, res)


def test_lf_input_keeps_lf(keys, tmp_path):
    msg = CORPUS["plain"].replace(b"\r\n", b"\n")
    signed = sluice_sign(keys, "ed25519", "relaxed/relaxed", msg)
    assert b"\r" not in signed and signed.endswith(msg)
    assert dkimpy_verify(crlf(signed), keys)
    # sluice verify accepts LF files as they are
    path = tmp_path / "lf.eml"
    path.write_bytes(signed)
    assert sluice_verify(keys, path).returncode == 0


def test_two_signers_on_one_message(keys, tmp_path):
    msg = CORPUS["folded_repeated"]
    once = sluice_sign(keys, "rsa", "relaxed/relaxed", msg)
    twice = sluice_sign(keys, "ed25519", "simple/simple", once)
    path = tmp_path / "two.eml"
    path.write_bytes(twice)
    p = sluice_verify(keys, path)
    assert p.returncode == 0
    res = json.loads(p.stdout)
    assert [s["result"] for s in res["signatures"]] == ["pass", "pass"]
    assert [s["algorithm"] for s in res["signatures"]] == ["ed25519-sha256", "rsa-sha256"]
    assert dkimpy_verify(twice, keys)


# ---- dkimpy signs, sluice verifies ----------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_dkimpy_signs_sluice_verifies(keys, alg, canon, name, tmp_path):
    k = keys[alg]
    if alg == "rsa":
        privkey = Path(k["key_file"]).read_bytes()
    else:
        privkey = ed25519_seed_b64(k["key_file"])
    hc, bc = canon.encode().split(b"/")
    msg = CORPUS[name]
    sig = dkim.sign(msg, k["selector"].encode(), DOMAIN.encode(), privkey,
                    canonicalize=(hc, bc), signature_algorithm=("%s-sha256" % alg).encode())
    signed = sig + msg
    path = tmp_path / "dkimpy.eml"
    path.write_bytes(signed)
    p = sluice_verify(keys, path)
    assert p.returncode == 0, (name, alg, canon, p.stdout, p.stderr)
    res = json.loads(p.stdout)
    assert res["result"] == "pass"
    s = res["signatures"][0]
    assert (s["domain"], s["selector"], s["canonicalization"]) == (DOMAIN, k["selector"], canon)
    for kind, bad in tampered(signed).items():
        path.write_bytes(bad)
        p = sluice_verify(keys, path)
        assert p.returncode == 4, (name, alg, canon, kind, p.stdout)


# ---- verify: outputs and key sources --------------------------------------------------------


def test_verify_text_output_and_key_file(keys, tmp_path):
    signed = sluice_sign(keys, "rsa", "relaxed/relaxed", CORPUS["plain"])
    path = tmp_path / "m.eml"
    path.write_bytes(signed)
    p = run(["verify", str(path), "--dns-zone", keys["zone"], "--authserv-id", "mx.test"], check=0)
    line = p.stdout.decode().strip()
    assert line.startswith("Authentication-Results: mx.test; dkim=pass header.d=example.org "
                           "header.s=s-rsa header.a=rsa-sha256 header.b=")
    # --key-file with the record value, and with BIND-style quoted strings
    rec = tmp_path / "rec.txt"
    rec.write_text(keys["rsa"]["value"] + "\n")
    run(["verify", str(path), "--key-file", str(rec)], check=0)
    rec.write_text("( " + "\n ".join('"%s"' % s for s in keys["rsa"]["strings"]) + " )\n")
    run(["verify", str(path), "--key-file", str(rec)], check=0)
    # the wrong key fails
    rec.write_text(keys["ed25519"]["value"])
    assert run(["verify", str(path), "--key-file", str(rec)]).returncode == 4


def test_verify_unsigned_missing_key_and_bad_file(keys, tmp_path):
    path = tmp_path / "u.eml"
    path.write_bytes(CORPUS["plain"])
    p = run(["verify", str(path), "--dns-zone", keys["zone"]])
    assert p.returncode == 5
    assert b"dkim=none" in p.stdout
    # a selector missing from the zone: permerror "no key"
    signed = sluice_sign(keys, "rsa", "relaxed/relaxed", CORPUS["plain"])
    zone = tmp_path / "empty.zone"
    zone.write_text("other._domainkey.example.org. TXT \"v=DKIM1; p=\"\n")
    path.write_bytes(signed)
    p = run(["verify", str(path), "--json", "--dns-zone", str(zone)])
    assert p.returncode == 4
    s = json.loads(p.stdout)["signatures"][0]
    assert s["result"] == "permerror" and "no key" in s["reason"]
    # a key that is revoked
    zone.write_text("s-rsa._domainkey.example.org. TXT \"v=DKIM1; k=rsa; p=\"\n")
    p = run(["verify", str(path), "--json", "--dns-zone", str(zone)])
    assert json.loads(p.stdout)["signatures"][0]["reason"] == "key revoked (empty p=)"
    assert run(["verify", str(tmp_path / "missing.eml")]).returncode == 3


def test_sign_refuses_bad_input(keys, tmp_path):
    k = keys["rsa"]
    base = ["dkim", "sign", "--domain", DOMAIN, "--selector", k["selector"]]
    # no From
    p = run(base + ["--key", k["key_file"]], stdin=b"Subject: x\r\n\r\nbody\r\n")
    assert p.returncode == 2 and b"From" in p.stderr
    # key of the wrong type for the algorithm
    p = run(base + ["--key", k["key_file"], "--algorithm", "ed25519-sha256"],
            stdin=CORPUS["plain"])
    assert p.returncode == 2 and b"RSA" in p.stderr
    # unreadable key
    p = run(base + ["--key", str(tmp_path / "nope.key")], stdin=CORPUS["plain"])
    assert p.returncode == 2 and b"cannot open" in p.stderr


def test_verify_rfc8463_example(tmp_path):
    """RFC 8463 Appendix A: both signatures of the published message pass."""
    if not os.access(SLUICE, os.X_OK):
        pytest.fail("sluice binary not found at %s" % SLUICE)
    data = Path(os.environ.get("SLUICE_TESTDATA", REPO.parent / "shared" / "testdata"))
    data = data / "dkim-rfc8463"
    if not data.is_dir():
        pytest.skip("shared test data not present")
    zone = tmp_path / "rfc8463.zone"
    with open(zone, "w") as f:
        for line in (data / "dns.txt").read_text().splitlines():
            name, _, value = line.partition(" ")
            f.write('%s TXT "%s"\n' % (name, value))
    p = run(["verify", str(data / "signed.eml"), "--json", "--dns-zone", str(zone)], check=0)
    sigs = json.loads(p.stdout)["signatures"]
    assert [(s["selector"], s["result"]) for s in sigs] == [("brisbane", "pass"), ("test", "pass")]
