"""The systemd unit of a single-host install: systemd's own checker accepts
it with the unit pointing at the built binary, and it keeps the hardening
docs/DEPLOY.md promises."""
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

UNIT = ROOT / "deploy" / "systemd" / "sluice.service"


def settings():
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_is_hardened():
    s = settings()
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "MemoryDenyWriteExecute": "yes", "KillSignal": "SIGTERM",
                       "StateDirectory": "sluice", "UMask": "0077"}.items():
        assert s.get(key) == [value], key
    assert s["ReadWritePaths"] == ["/var/lib/sluice"]
    # the stop waits longer than the default [server] shutdown_grace (30 s)
    assert int(s["TimeoutStopSec"][0]) > 30
    assert set(s["CapabilityBoundingSet"][0].split()) == {
        "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER",
        "CAP_DAC_OVERRIDE"}


def test_systemd_accepts_the_unit(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = tmp_path / "sluice.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/sluice", BIN))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "sluice.service" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
