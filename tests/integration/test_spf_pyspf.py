"""SPF interoperability: `sluice spf check --dns-zone` against pyspf (python3-spf).

One zone file feeds both: the sluice binary reads it with --dns-zone, and
pyspf gets the same records through a replacement spf.DNSLookup. Every case
must give the same result in both, and the expected one. No network.

Run with /usr/bin/python3 -m pytest; SLUICE_BIN names the binary (default
build/sluice under the repository root).
"""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import spf

REPO = Path(__file__).resolve().parents[2]
SLUICE = os.environ.get("SLUICE_BIN", str(REPO / "build" / "sluice"))

ZONE = r"""
# policies
example.com      TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.net -all"
example.com      TXT "google-site-verification=abc"
_spf.example.net TXT "v=spf1 a:out.example.net mx ~all"
example.net      MX  10 mx1.example.net
_spf.example.net MX  10 mx1.example.net
mx1.example.net  A   198.51.100.25
out.example.net  A   198.51.100.7
out.example.net  AAAA 2001:db8:ffff::7
soft.example.org TXT "v=spf1 ?ip4:203.0.113.0/24 ~all"
neutral.example.org TXT "v=spf1 ?all"
redir.example.org TXT "v=spf1 redirect=example.com"
split.example.org TXT "v=spf1 ip4:203.0.113.5" " -all"
cidr.example.org TXT "v=spf1 a:host.example.org/28 a//64 -all"
cidr.example.org AAAA 2001:db8:aaaa::1
host.example.org A 203.0.113.33
macro.example.org TXT "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all"
5.113.0.203.jane._spf.macro.example.org A 127.0.0.2
ptr.example.org TXT "v=spf1 ptr -all"
mail.ptr.example.org A 203.0.113.77
77.113.0.203.in-addr.arpa PTR mail.ptr.example.org
two.example.org TXT "v=spf1 -all"
two.example.org TXT "v=spf1 +all"
bad.example.org TXT "v=spf1 ip4:192.0.2.300 -all"
badmech.example.org TXT "v=spf1 foo:bar -all"
loop.example.org TXT "v=spf1 include:loop.example.org -all"
many.example.org TXT "v=spf1 a:a1.example.org a:a2.example.org a:a3.example.org a:a4.example.org a:a5.example.org a:a6.example.org a:a7.example.org a:a8.example.org a:a9.example.org a:a10.example.org a:a11.example.org -all"
voids.example.org TXT "v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org ?all"
timeout.example.org TIMEOUT
inctemp.example.org TXT "v=spf1 include:timeout.example.org -all"
incnone.example.org TXT "v=spf1 include:nothing.example.org -all"
exp.example.org TXT "v=spf1 -all exp=why.example.org"
why.example.org TXT "%{i} is not one of %{d}'s designated mail servers."
helo.example.org TXT "v=spf1 a -all"
helo.example.org A 203.0.113.99
"""
for i in range(1, 12):
    ZONE += f"a{i}.example.org A 10.0.0.{i}\n"

# (ip, sender, helo, expected result)
CASES = [
    ("192.0.2.10", "user@example.com", "mx.example.com", "pass"),
    ("2001:db8::5", "user@example.com", "mx.example.com", "pass"),
    ("198.51.100.7", "user@example.com", "mx.example.com", "pass"),
    ("198.51.100.25", "user@example.com", "mx.example.com", "pass"),
    ("2001:db8:ffff::7", "user@example.com", "mx.example.com", "pass"),
    ("198.51.100.8", "user@example.com", "mx.example.com", "fail"),
    ("203.0.113.5", "user@soft.example.org", "x.example", "neutral"),
    ("198.51.100.1", "user@soft.example.org", "x.example", "softfail"),
    ("198.51.100.1", "user@neutral.example.org", "x.example", "neutral"),
    ("192.0.2.77", "user@redir.example.org", "x.example", "pass"),
    ("198.51.100.1", "user@redir.example.org", "x.example", "fail"),
    ("203.0.113.5", "user@split.example.org", "x.example", "pass"),
    ("203.0.113.6", "user@split.example.org", "x.example", "fail"),
    ("203.0.113.40", "user@cidr.example.org", "x.example", "pass"),
    ("203.0.113.50", "user@cidr.example.org", "x.example", "fail"),
    ("2001:db8:aaaa::ffff", "user@cidr.example.org", "x.example", "pass"),
    ("203.0.113.5", "jane@macro.example.org", "x.example", "pass"),
    ("203.0.113.5", "john@macro.example.org", "x.example", "fail"),
    ("203.0.113.77", "user@ptr.example.org", "x.example", "pass"),
    ("203.0.113.78", "user@ptr.example.org", "x.example", "fail"),
    ("192.0.2.1", "user@two.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@bad.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@badmech.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@loop.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@many.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@voids.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@timeout.example.org", "x.example", "temperror"),
    ("192.0.2.1", "user@inctemp.example.org", "x.example", "temperror"),
    ("192.0.2.1", "user@incnone.example.org", "x.example", "permerror"),
    ("192.0.2.1", "user@nothing.example.org", "x.example", "none"),
    ("192.0.2.1", "user@exp.example.org", "x.example", "fail"),
    ("203.0.113.99", "", "helo.example.org", "pass"),
    ("203.0.113.98", "", "helo.example.org", "fail"),
    ("::ffff:192.0.2.10", "user@example.com", "mx.example.com", "pass"),
]

EXIT = {"pass": 0, "neutral": 5, "none": 5, "softfail": 5,
        "fail": 4, "temperror": 4, "permerror": 4}


def parse_zone(text):
    """The zone-file format of src/mailauth/dns.h, for the pyspf side."""
    zone = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        name, rtype, *rest = line.split(None, 2)
        name = name.rstrip(".").lower()
        value = rest[0] if rest else ""
        if rtype == "TXT":
            value = "".join(shlex.split(value, posix=True)) if value.startswith('"') else value
        elif rtype == "MX":
            pref, host = value.split()
            value = (int(pref), host.rstrip("."))
        zone.setdefault(name, []).append((rtype, value))
    return zone


@pytest.fixture(scope="module")
def zone_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spf") / "zone.txt"
    path.write_text(ZONE)
    return path


@pytest.fixture(scope="module")
def pyspf_check():
    zone = parse_zone(ZONE)

    def lookup(name, qtype, tcpfallback=True, timeout=30):
        key = name.rstrip(".").lower()
        records = zone.get(key, [])
        if any(t == "TIMEOUT" for t, _ in records):
            raise spf.TempError("DNS timeout")
        out = []
        for t, v in records:
            if t != qtype:
                continue
            if t == "TXT":
                out.append(((name, t), [v.encode()]))
            else:
                out.append(((name, t), v))
        return out

    saved = spf.DNSLookup
    spf.DNSLookup = lookup

    def check(ip, sender, helo):
        q = spf.query(i=ip, s=sender, h=helo, querytime=0)
        return q.check()[0]

    yield check
    spf.DNSLookup = saved


def sluice_check(zone_file, ip, sender, helo):
    p = subprocess.run([SLUICE, "spf", "check", "--ip", ip, "--sender", sender, "--helo", helo,
                        "--dns-zone", str(zone_file), "--json"],
                       capture_output=True, timeout=30)
    out = json.loads(p.stdout)
    assert p.returncode == EXIT[out["result"]], (p.returncode, out)
    return out


@pytest.mark.parametrize("ip,sender,helo,want", CASES,
                         ids=[f"{c[1] or c[2]}-{c[0]}" for c in CASES])
def test_same_result_as_pyspf(zone_file, pyspf_check, ip, sender, helo, want):
    ours = sluice_check(zone_file, ip, sender, helo)
    theirs = pyspf_check(ip, sender, helo)
    assert ours["result"] == theirs, (ours, theirs)
    assert ours["result"] == want, ours


def test_explanation_and_counts(zone_file):
    out = sluice_check(zone_file, "192.0.2.1", "user@exp.example.org", "x.example")
    assert out["explanation"] == "192.0.2.1 is not one of exp.example.org's designated mail servers."
    out = sluice_check(zone_file, "198.51.100.25", "user@example.com", "x.example")
    assert out["mechanism"] == "include:_spf.example.net"
    assert out["dns_lookups"] == 3  # include, a, mx
    out = sluice_check(zone_file, "192.0.2.1", "user@many.example.org", "x.example")
    assert "10" in out["problem"]


def test_text_output_and_usage(zone_file):
    p = subprocess.run([SLUICE, "spf", "check", "--ip", "192.0.2.10", "--sender",
                        "user@example.com", "--dns-zone", str(zone_file)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    assert "result: pass" in p.stdout and "dns lookups: 0" in p.stdout
    p = subprocess.run([SLUICE, "spf", "check", "--ip", "nonsense", "--sender", "a@b.example"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "not an IPv4 or IPv6 address" in p.stderr
    bad = zone_file.parent / "bad-zone.txt"
    bad.write_text("example.com A 999.1.1.1\n")
    p = subprocess.run([SLUICE, "spf", "check", "--ip", "192.0.2.1", "--sender", "a@example.com",
                        "--dns-zone", str(bad)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "line 1" in p.stderr
