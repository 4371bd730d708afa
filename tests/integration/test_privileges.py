"""Privileges, file modes and secrets, black box: `sluice serve` started as root
runs as [server] user once its listeners, stores and keys are open; what Sluice
creates is private to its owner; secret and key files open to others are
refused; a secret_env value leaves the environment; no core dumps."""
import os
import pwd
import shutil
import smtplib
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, Sluice, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the drop")


def proc_ids(pid, field):
    """The four ids (real, effective, saved, filesystem) of a Uid:/Gid: line."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def core_limit(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit line")


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def send(s, tag, rcpt="qa@example.net"):
    msg = (f"From: app@shop.test\r\nTo: {rcpt}\r\nSubject: {tag}\r\n"
           f"Message-ID: <{tag}@shop.test>\r\n\r\nbody {tag}\r\n")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        c.sendmail("app@shop.test", [rcpt], msg.encode())


@pytest.fixture
def reachable_dir():
    """A work folder the sluice user can reach: pytest's own tmp folders sit
    under /tmp/pytest-of-root (0700)."""
    d = Path(tempfile.mkdtemp(prefix="sluice-priv-", dir="/tmp"))
    d.chmod(0o755)
    closed = [str(p) for p in d.parents if not os.stat(p).st_mode & 0o001]
    if closed:  # e.g. a chroot whose top folder is 0700: no other user gets in
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"{', '.join(closed)} cannot be passed by other users on this machine")
    started = []
    yield d, started
    for s in started:
        s.stop()
    shutil.rmtree(d, ignore_errors=True)


def dropping_sluice(reachable_dir, env=None, config_text=None):
    d, started = reachable_dir
    env = {"SLUICE_SERVER_RELAY_NETWORKS": "127.0.0.1/32", **(env or {})}
    s = Sluice(d / f"relay{len(started)}", env=env, config_text=config_text)
    # whatever the umask of the test run, the user passes through and may
    # read the config file again on SIGHUP
    s.dir.chmod(0o755)
    if (s.dir / "sluice.conf").exists():
        (s.dir / "sluice.conf").chmod(0o644)
    if "SLUICE_SERVER_USER" not in env:
        del s.env["SLUICE_SERVER_USER"]  # as installed: the default, sluice
    started.append(s)
    return s


@pytest.fixture
def sluice_user():
    try:
        return pwd.getpwnam("sluice")
    except KeyError:
        pytest.skip("no 'sluice' user (scripts/deps.sh makes it)")


# ---- privilege drop ----

def test_root_start_runs_as_sluice_user_and_keeps_working(reachable_dir, sluice_user):
    s = dropping_sluice(reachable_dir)
    s.cli("creds", "add", "shop", "--password", "--init", input="a long password\n")
    s.cli("dkim", "keygen", "--domain", "shop.test", "--selector", "s1", "--init")
    s.start()
    pid = s.proc.pid
    assert proc_ids(pid, "Uid") == [sluice_user.pw_uid] * 4
    assert proc_ids(pid, "Gid") == [sluice_user.pw_gid] * 4
    groups = Path(f"/proc/{pid}/status").read_text().split("Groups:")[1].split("\n")[0].split()
    assert "0" not in groups
    ev = s.events("server.privileges_dropped")
    assert ev and ev[0]["user"] == "sluice"

    # mail is still accepted, spooled and captured by the sluice user
    send(s, "after-drop")
    msgs = s.wait_captured(1)
    assert os.stat(msgs[0]["path"]).st_uid == sluice_user.pw_uid
    assert os.stat(s.var / "spool").st_uid == sluice_user.pw_uid
    # the CLI, run as root, still reaches the control socket
    assert s.queue("stats")["ok"]

    # what root adds next to the running daemon is given to it: a new DKIM key
    s.cli("dkim", "keygen", "--domain", "shop.test", "--selector", "s2")
    p = s.var / "dkim" / "s2._domainkey.shop.test.key"
    assert os.stat(p).st_uid == sluice_user.pw_uid and mode(p) == 0o600, p
    # SIGHUP re-reads config, TLS key and DKIM keys as the sluice user
    s.hup()
    wait_for(lambda: s.events("server.reloaded") or s.events("server.reload_failed"),
             what="reload outcome")
    assert s.events("server.reloaded") and not s.events("server.reload_failed"), s.log_text()
    assert not s.events("dkim.load_failed")
    send(s, "after-reload")
    assert len(s.wait_captured(2)) == 2
    assert proc_ids(pid, "Uid") == [sluice_user.pw_uid] * 4


def test_missing_user_is_refused_with_the_key_named(reachable_dir):
    s = dropping_sluice(reachable_dir, env={"SLUICE_SERVER_USER": "no-such-sluice-user"})
    r = subprocess.run([BIN, "serve"], env=s.env, cwd=s.dir, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[server] user" in r.stderr and "no-such-sluice-user" in r.stderr, r.stderr
    # refused before anything was opened or made
    assert not (s.var / "spool").exists()


def test_user_root_is_an_explicit_opt_in_with_a_warning(make_sluice):
    s = make_sluice().start()  # the harness sets SLUICE_SERVER_USER=root
    assert proc_ids(s.proc.pid, "Uid") == [0] * 4
    warn = s.events("server.running_as_root")
    assert warn and warn[0]["level"] in ("warn", "warning"), warn


# ---- core dumps and the dumpable flag ----

def test_no_core_dumps_and_not_dumpable(reachable_dir, sluice_user):
    s = dropping_sluice(reachable_dir).start()
    pid = s.proc.pid
    assert core_limit(pid) == ["0", "0"]
    # The kernel gives a non-dumpable process's /proc files to root: running
    # as sluice, its /proc/PID/fd would otherwise belong to sluice.
    assert proc_ids(pid, "Uid")[1] == sluice_user.pw_uid
    st = os.stat(f"/proc/{pid}/fd")
    assert (st.st_uid, st.st_gid) == (0, 0)
    st = os.stat(f"/proc/{pid}/environ")
    assert st.st_uid == 0


def test_root_daemon_has_no_core_limit_either(make_sluice):
    s = make_sluice().start()
    assert core_limit(s.proc.pid) == ["0", "0"]


# ---- file modes ----

def test_everything_sluice_creates_is_private(reachable_dir, sluice_user):
    d, _ = reachable_dir
    hooks = d / "hook.key"
    hooks.write_text("hook-secret\n")
    hooks.chmod(0o600)
    s = dropping_sluice(reachable_dir)
    s.cli("creds", "add", "shop", "--password", "--init", input="a long password\n")
    var = s.var
    assert mode(var) == 0o700
    assert mode(var / "sluice.db") == 0o600
    s.cli("dkim", "keygen", "--domain", "shop.test", "--selector", "s1", "--init")
    assert mode(var / "dkim") == 0o700
    assert mode(var / "dkim" / "s1._domainkey.shop.test.key") == 0o600
    s.start()
    send(s, "modes")
    msgs = s.wait_captured(1)
    # the daemon holds the store open: its -wal and -shm exist now
    wait_for(lambda: (var / "sluice.db-wal").exists(), what="sluice.db-wal")
    private = [var / "sluice.db", var / "sluice.db-wal", var / "sluice.db-shm",
               var / "tls" / "key.pem", var / "scram.key", var / "privacy.key",
               var / "audit.log", var / "control.sock", msgs[0]["path"],
               msgs[0]["path"].with_suffix(".json")]
    private += list((var / "spool").glob("seg-*.log"))
    assert list((var / "spool").glob("seg-*.log"))
    for p in private:
        assert mode(p) == 0o600, f"{p}: {oct(mode(p))}"
    for folder in (var, var / "tls", var / "spool", var / "capture", var / "dkim"):
        assert mode(folder) == 0o700, f"{folder}: {oct(mode(folder))}"
        assert os.stat(folder).st_uid == sluice_user.pw_uid


LOOSE_CASES = {
    "upstream": ("[upstream main]\nkind = smtp\nhost = 127.0.0.1\nport = 2\nauth = plain\n"
                 "username = u\nsecret_file = {f}\n", "[upstream main] secret_file"),
    "webhook": ("[webhook]\nurls = http://127.0.0.1:9/hook\nsecret_file = {f}\n",
                "[webhook] secret_file"),
    "scram": ("[auth]\nscram_secret_file = {f}\n", "[auth] scram_secret_file"),
    "tls_key": ("[tls]\nkey = {f}\n", "[tls] key"),
}


@pytest.mark.parametrize("case", sorted(LOOSE_CASES))
def test_secret_file_open_to_others_is_refused(make_sluice, tmp_path, case):
    text, what = LOOSE_CASES[case]
    f = tmp_path / "secret"
    f.write_text("x" * 32 + "\n")
    f.chmod(0o644)
    s = make_sluice(config_text=text.format(f=f))
    r = s.cli("config", "check", check=False)
    assert r.returncode == 4
    assert f"{what} {f} has mode 0644" in r.stdout, r.stdout
    r = subprocess.run([BIN, "serve"], env=s.env, cwd=s.dir, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1 and f"{f} has mode 0644" in r.stderr, r.stdout + r.stderr
    f.chmod(0o600)
    r = s.cli("config", "check", check=False)
    assert "has mode" not in r.stdout, r.stdout


def test_dkim_key_open_to_group_is_refused(make_sluice):
    s = make_sluice()
    s.cli("dkim", "keygen", "--domain", "shop.test", "--selector", "s1", "--init")
    key = s.var / "dkim" / "s1._domainkey.shop.test.key"
    key.chmod(0o640)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 4 and f"[dkim] key {key}" in r.stdout \
        and "mode 0640" in r.stdout, r.stdout
    r = subprocess.run([BIN, "serve"], env=s.env, cwd=s.dir, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1 and "mode 0640" in r.stderr, r.stdout + r.stderr


def test_loosened_key_refuses_the_reload_and_keeps_running(make_sluice):
    s = make_sluice(env={"SLUICE_SERVER_RELAY_NETWORKS": "127.0.0.1/32"}).start()
    (s.var / "tls" / "key.pem").chmod(0o644)
    s.hup()
    wait_for(lambda: s.events("server.reload_failed"), what="reload refused")
    assert not s.events("server.reloaded")
    assert any("mode 0644" in e.get("message", "") for e in s.events("config.error"))
    send(s, "still-running")
    s.wait_captured(1)


# ---- secret_env ----

def test_secret_env_leaves_the_environment_and_survives_reload(
        reachable_dir, make_upstream, certs, sluice_user):
    d, _ = reachable_dir
    ca = d / "ca.pem"  # readable by the sluice user after the drop
    shutil.copy(certs / "ca.pem", ca)
    ca.chmod(0o644)
    password = "env-secret-" + os.urandom(6).hex()
    up = make_upstream("--tls", "starttls", "--cert", f"{certs}/server.pem",
                       "--key", f"{certs}/server.key", "--user", "relay", "--password", password,
                       "--auth-required")
    cfg = ("[server]\nrelay_networks = 127.0.0.1/32\n"
           f"[upstream main]\nhost = 127.0.0.1\nport = {up.port}\ntls = starttls\n"
           f"ca_file = {ca}\ntimeout = 5s\nconnect_timeout = 3s\nauth = plain\n"
           "username = relay\nsecret_env = RELAY_PASSWORD\n")
    s = dropping_sluice(reachable_dir, env={"RELAY_PASSWORD": password}, config_text=cfg)
    s.start()
    environ = Path(f"/proc/{s.proc.pid}/environ").read_bytes()
    assert b"SLUICE_SERVER_HOSTNAME=relay.test" in environ  # read the right block
    assert password.encode() not in environ
    assert b"RELAY_PASSWORD=" + password.encode() not in environ
    send(s, "env-1", rcpt="to@dest.test")
    wait_for(lambda: len(up.messages()) >= 1, timeout=20, what="delivery with the env secret")
    s.hup()
    wait_for(lambda: s.events("server.reloaded") or s.events("server.reload_failed"),
             what="reload outcome")
    assert s.events("server.reloaded") and not s.events("deliver.reload_failed"), s.log_text()
    send(s, "env-2", rcpt="to@dest.test")
    wait_for(lambda: len(up.messages()) >= 2, timeout=20, what="delivery after reload")
    assert all(m["auth_user"] == "relay" for m in up.messages())
    assert password.encode() not in Path(f"/proc/{s.proc.pid}/environ").read_bytes()


def test_var_dir_the_user_cannot_reach_is_refused(make_sluice, tmp_path, sluice_user):
    # pytest's tmp folders sit under /tmp/pytest-of-root, mode 0700
    s = make_sluice(env={"SLUICE_SERVER_RELAY_NETWORKS": "127.0.0.1/32"})
    del s.env["SLUICE_SERVER_USER"]
    r = subprocess.run([BIN, "serve"], env=s.env, cwd=s.dir, capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"user sluice cannot use {s.var}" in r.stderr, r.stderr


def test_auth_secrets_wiped_in_the_dropped_daemon(reachable_dir, sluice_user):
    """The memory test of test_smtp_protocol.py, against a daemon that runs
    as sluice and is not dumpable: root can still read its memory, and the
    PLAIN line, its decoded password and a LOGIN password are gone."""
    import base64
    from test_smtp_protocol import plain_token, process_memory_holds
    from support_smtp import Conn, new_msgid
    s = dropping_sluice(reachable_dir, env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    password = "wipe-me-" + new_msgid()
    s.cli("creds", "add", "app", "--password", "--init", input=password + "\n")
    s.start()
    assert proc_ids(s.proc.pid, "Uid")[1] == sluice_user.pw_uid
    token = plain_token("", "app", password)
    with Conn(s.port) as c, Conn(s.port) as c2:
        c.ehlo()
        c.expect("AUTH PLAIN " + token, 235, "2.7.0")
        c.expect("NOOP", 250)
        c2.ehlo()
        c2.expect("AUTH LOGIN " + base64.b64encode(b"app").decode(), 334)
        c2.expect(base64.b64encode(password.encode()).decode(), 235, "2.7.0")
        c2.expect("NOOP", 250)
        left = process_memory_holds(s.proc.pid, [token.encode(), password.encode(),
                                                 base64.b64encode(password.encode())])
        assert not left, f"secrets still in the daemon's memory: {left}"
