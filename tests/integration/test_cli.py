"""The command line as an operator meets it: every verb finds the daemon's
store through -c FILE or SLUICE_CONFIG from any directory, relative paths
in a config file start at the file's folder, one daemon per var_dir, help
that touches nothing, stray arguments refused, one JSON error shape and one
table of exit statuses (docs/CLI.md)."""
import json
import os
import re
import smtplib
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, PASSWORD, ROOT, legacy_users_file, wait_for


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(extra)
    return env


def run(*args, cwd, env=None, input=None):
    return subprocess.run([BIN, *args], cwd=cwd, env=env if env is not None else clean_env(),
                          input=input, capture_output=True, text=True, timeout=60)


def listing(*dirs):
    """Every path under dirs, to show that a command created nothing."""
    out = set()
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            for n in subdirs + files:
                out.add(os.path.join(root, n))
    return out


def json_error(r, code, status):
    """The one error shape of --json: exactly {"error": {"code", "message"}}."""
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    assert doc["error"]["code"] == code, doc
    assert doc["error"]["message"] and doc["error"]["message"] in r.stderr
    return doc["error"]["message"]


def login_and_send(port, user, password):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        c.login(user, password)
        refused = c.sendmail(f"{user}@app.test", ["someone@example.net"],
                             f"From: {user}@app.test\r\nTo: someone@example.net\r\n"
                             f"Subject: hello\r\n\r\nhi\r\n")
        assert refused == {}


@pytest.fixture
def elsewhere(tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    return d


@pytest.fixture
def etc_relay(make_sluice, tmp_path):
    """A daemon whose config file lives in tmp/etc and says var_dir = state
    (relative), started from another directory: its store is tmp/etc/state."""
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = etc / "sluice.conf"
    conf.write_text("[server]\nvar_dir = state\n\n[auth]\nallow_plaintext_loopback = true\n")
    s = make_sluice("relay")
    del s.env["SLUICE_SERVER_VAR_DIR"]
    s.env["SLUICE_CONFIG"] = str(conf)
    s.var = etc / "state"
    s.conf = conf
    return s.start()


def test_cli_elsewhere_finds_the_daemons_store(etc_relay, elsewhere):
    s = etc_relay
    assert (s.var / "sluice.db").exists() and not (s.dir / "state").exists()
    # -c FILE, from a directory that has nothing to do with the daemon
    r = run("creds", "add", "viaflag", "--password", "-c", str(s.conf), cwd=elsewhere,
            input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    # SLUICE_CONFIG, the same store
    env = clean_env(SLUICE_CONFIG=str(s.conf))
    r = run("creds", "add", "viaenv", "--password", cwd=elsewhere, env=env, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert listing(elsewhere) == set()
    # the running daemon accepts both, without a reload
    login_and_send(s.port, "viaflag", PASSWORD)
    login_and_send(s.port, "viaenv", PASSWORD)
    s.wait_captured(2)
    # -c in any position, and --config=FILE
    for args in (["-c", str(s.conf), "creds", "list"], ["creds", "-c", str(s.conf), "list"],
                 ["creds", "list", f"--config={s.conf}"], ["--json", "creds", "list", "-c",
                                                          str(s.conf)]):
        r = run(*args, cwd=elsewhere)
        assert r.returncode == 0 and "viaflag" in r.stdout, (args, r.stderr)
    # the queue asks the daemon over the configured control socket
    r = run("queue", "stats", "--json", cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["data"]["messages"] >= 0
    # stats reads the same store's counters
    def counted():
        r = run("stats", "--json", "--since", "today", cwd=elsewhere, env=env)
        assert r.returncode == 0, r.stderr
        return {c["name"]: c["accepted"] for c in json.loads(r.stdout)["creds"]}
    wait_for(lambda: counted() == {"viaflag": 1, "viaenv": 1}, what="both counted")
    assert listing(elsewhere) == set()


def test_relative_paths_start_at_the_config_folder(tmp_path, elsewhere):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "sluice.conf").write_text(
        "[server]\nvar_dir = ./state\n\n[dkim]\nkey_dir = keys\n\n[auth]\ncreds_db = db/creds.db\n")
    # a relative -c path too: resolved against the working directory, then its folder
    r = run("config", "dump", "--json", "-c", "../etc/sluice.conf", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["server"]["var_dir"] == str(etc / "state")
    assert doc["server"]["spool_dir"] == str(etc / "state" / "spool")
    assert doc["server"]["control_socket"] == str(etc / "state" / "control.sock")
    assert doc["dkim"]["key_dir"] == str(etc / "keys")
    assert doc["auth"]["creds_db"] == str(etc / "db" / "creds.db")
    # the defaults of keys the file leaves out start there as well
    (etc / "bare.conf").write_text("[log]\nlevel = info\n")
    doc = json.loads(run("config", "dump", "--json", "-c", str(etc / "bare.conf"),
                         cwd=elsewhere).stdout)
    assert doc["server"]["var_dir"] == str(etc / "var")
    # no config file: the embedded defaults stay relative to the working directory
    doc = json.loads(run("config", "dump", "--json", cwd=elsewhere).stdout)
    assert doc["server"]["var_dir"] == "./var" and doc["path"] is None
    # a relative path from the environment stays relative to the working directory
    env = clean_env(SLUICE_CONFIG=str(etc / "sluice.conf"), SLUICE_SERVER_VAR_DIR="mine")
    doc = json.loads(run("config", "dump", "--json", cwd=elsewhere, env=env).stdout)
    assert doc["server"]["var_dir"] == "mine" and doc["server"]["spool_dir"] == "mine/spool"
    # and a verb that writes uses the resolved path
    r = run("creds", "add", "app", "--api-key", "--init", "-c", str(etc / "sluice.conf"),
            cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (etc / "db" / "creds.db").exists() and listing(elsewhere) == set()


def test_second_serve_on_the_same_var_dir_is_refused(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    s.add_user("app")
    s.start()
    lock = s.var / "sluice.lock"
    assert lock.read_text().strip() == str(s.proc.pid)
    second = subprocess.run([BIN, "serve"], env=s.env, cwd=s.dir, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 1, second.stderr
    assert str(lock) in second.stderr and f"pid {s.proc.pid}" in second.stderr
    # with --json, the same refusal in the error shape
    second = subprocess.run([BIN, "serve", "--json"], env=s.env, cwd=s.dir, capture_output=True,
                            text=True, timeout=60)
    assert "sluice.lock" in json_error(second, "locked", 1)
    # the first keeps serving, its lock intact
    assert s.proc.poll() is None
    login_and_send(s.port, "app", PASSWORD)
    s.wait_captured(1)
    assert lock.read_text().strip() == str(s.proc.pid)
    # once it is gone, a new daemon takes the lock
    assert s.stop() == 0
    s.start()
    assert lock.read_text().strip() == str(s.proc.pid)


HELP = [["serve"], ["config"], ["config", "check"], ["config", "dump"], ["config", "docs"],
        ["queue"], ["queue", "list"], ["queue", "flush"], ["creds"], ["creds", "add"],
        ["creds", "list"], ["creds", "import"], ["stats"], ["dkim"], ["dkim", "keygen"],
        ["dkim", "sign"], ["verify"], ["spf"], ["spf", "check"], ["check-domain"],
        ["dns-records"], ["audit"], ["audit", "verify"], ["version"], []]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_on_every_verb_touches_nothing(tmp_path, flag):
    cwd = tmp_path / "cwd"
    var = tmp_path / "var"
    cwd.mkdir()
    var.mkdir()
    conf = tmp_path / "sluice.conf"
    conf.write_text(f"[server]\nvar_dir = {var}\n")
    env = clean_env(SLUICE_CONFIG=str(conf))
    for verb in HELP:
        for args in ([*verb, flag], [flag, *verb], [*verb, flag, "--json"]):
            r = run(*args, cwd=cwd, env=env)
            assert r.returncode == 0, (args, r.stderr)
            assert r.stdout.startswith("usage: sluice"), (args, r.stdout)
            assert listing(cwd, var) == set(), args
    # embedded defaults (no config at all) would say ./var: nothing appears either
    for verb in HELP:
        assert run(*verb, flag, cwd=cwd).returncode == 0
    assert listing(cwd, var) == set()


STRAY = [["serve", "extra"], ["serve", "--bogus"], ["stats", "extra"], ["creds", "list", "extra"],
         ["creds", "show", "a", "b"], ["creds", "import"], ["creds", "list", "--bogus"],
         ["queue", "flush", "x", "y"], ["queue", "--bogus", "list"],
         ["dkim", "keygen", "--domain", "a.test", "--selector", "s", "extra"],
         ["dkim", "sign", "--key", "k", "--domain", "a.test", "--selector", "s", "extra"],
         ["dkim", "frob"], ["verify", "a.eml", "b.eml"], ["check-domain", "a.test", "b.test"],
         ["dns-records", "extra"], ["config", "check", "a", "b"], ["config", "docs", "x"],
         ["version", "extra"], ["audit", "verify", "--bogus"], ["audit", "frob"],
         ["spf", "check", "--ip", "192.0.2.1", "--sender", "a@a.test", "extra"],
         ["users", "add", "x"], ["frobnicate"], []]


def test_stray_arguments_exit_2(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for args in STRAY:
        r = run(*args, cwd=cwd, input="")
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("sluice"), (args, r.stderr)
        r = run(*args, "--json", cwd=cwd, input="")
        json_error(r, "usage", 2)
    r = run("creds", "list", "-c", cwd=cwd)
    assert r.returncode == 2 and "needs a FILE" in r.stderr
    assert listing(cwd) == set()
    # the users verb says where it went
    r = run("users", "list", cwd=cwd)
    assert "creds import" in r.stderr and "creds add" in r.stderr


def test_json_error_shape_of_failing_verbs(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    conf = tmp_path / "sluice.conf"
    conf.write_text("[server]\nvar_dir = var\n")
    env = clean_env(SLUICE_CONFIG=str(conf))
    msg = json_error(run("creds", "list", "--json", cwd=cwd, env=env), "needs_init", 3)
    assert str(tmp_path / "var" / "sluice.db") in msg and "--init" in msg
    assert run("creds", "add", "a", "--api-key", "--init", cwd=cwd, env=env).returncode == 0
    json_error(run("creds", "show", "nobody", "--json", cwd=cwd, env=env), "not_found", 3)
    json_error(run("creds", "add", "a", "--api-key", "--json", cwd=cwd, env=env), "exists", 1)
    json_error(run("creds", "add", "b", "--rate", "often", "--api-key", "--json", cwd=cwd,
                   env=env), "invalid_argument", 2)
    msg = json_error(run("queue", "stats", "--json", cwd=cwd, env=env), "daemon", 1)
    assert "control.sock" in msg and str(conf) in msg
    json_error(run("verify", str(tmp_path / "missing.eml"), "--json", cwd=cwd), "not_found", 3)
    bad = tmp_path / "bad.conf"
    bad.write_text("[server]\nno_such_key = 1\n")
    json_error(run("config", "dump", "--json", "-c", str(bad), cwd=cwd), "config", 1)
    msg = json_error(run("stats", "--json", "-c", str(bad), cwd=cwd), "config", 1)
    assert "no_such_key" in msg
    json_error(run("audit", "verify", "--json", cwd=cwd, env=env), "not_found", 3)
    r = run("config", "check", "--json", "-c", str(bad), cwd=cwd)
    assert r.returncode == 4 and json.loads(r.stdout)["ok"] is False  # a checker's verdict
    # without --json: the same statuses, the message on stderr, nothing on stdout
    r = run("creds", "show", "nobody", cwd=cwd, env=env)
    assert r.returncode == 3 and r.stdout == "" and "nobody" in r.stderr


def test_init_is_needed_to_create_a_store(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    conf = tmp_path / "etc" / "sluice.conf"
    conf.parent.mkdir()
    conf.write_text("[server]\nvar_dir = var\n")
    env = clean_env(SLUICE_CONFIG=str(conf))
    var = tmp_path / "etc" / "var"
    for args in (["creds", "list"], ["stats"], ["creds", "show", "x"],
                 ["creds", "add", "x", "--password"],
                 ["dkim", "keygen", "--domain", "a.test", "--selector", "s1"]):
        r = run(*args, cwd=cwd, env=env, input=PASSWORD + "\n")
        assert r.returncode == 3 and "--init" in r.stderr, (args, r.stderr)
        assert str(var) in r.stderr
        assert not var.exists() and listing(cwd) == set()
    # the embedded defaults name the working directory's ./var, and still create nothing
    r = run("creds", "list", cwd=cwd)
    assert r.returncode == 3 and str(cwd / "var" / "sluice.db") in r.stderr
    assert "embedded defaults" in r.stderr and listing(cwd) == set()
    # --init creates the store, then plain commands work
    r = run("creds", "add", "x", "--password", "--init", cwd=cwd, env=env, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert (var / "sluice.db").exists()
    assert run("creds", "list", cwd=cwd, env=env).returncode == 0
    assert run("stats", cwd=cwd, env=env).returncode == 0
    # keygen makes key_dir inside the existing var_dir without --init
    assert not (var / "dkim").exists()
    r = run("dkim", "keygen", "--domain", "a.test", "--selector", "s1", "--json",
            cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["key_file"] == str(var / "dkim" / "s1._domainkey.a.test.key")
    assert listing(cwd) == set()


def test_version():
    meson = (ROOT / "meson.build").read_text()
    version = re.search(r"version\s*:\s*'([^']+)'", meson).group(1)
    for args in (["--version"], ["version"]):
        r = run(*args, cwd="/")
        assert r.returncode == 0 and r.stdout == f"sluice {version}\n", r
    r = run("--version", "--json", cwd="/")
    assert json.loads(r.stdout) == {"version": version}


def test_creds_import_of_an_old_users_file(make_sluice, tmp_path):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    old = legacy_users_file(tmp_path / "old-users", {"alice": PASSWORD,
                                                     "bob": "another long password"})
    # a file that does not parse imports nothing
    broken = tmp_path / "broken-users"
    broken.write_text(old.read_text() + "carol:plaintext\n")
    r = s.cli("creds", "import", str(broken), "--init", check=False)
    assert r.returncode == 2 and "line 4" in r.stderr and "nothing imported" in r.stderr
    r = s.cli("creds", "import", str(old), "--init", "--json")
    assert json.loads(r.stdout) == {"file": str(old), "imported": ["alice", "bob"],
                                    "skipped": []}
    show = json.loads(s.cli("creds", "show", "alice", "--json").stdout)
    assert show["kinds"] == ["password"]
    # again: the names exist, nothing changes
    r = s.cli("creds", "import", str(old))
    assert "skipped alice" in r.stdout and "0 imported, 2 skipped" in r.stdout
    s.start()
    login_and_send(s.port, "alice", PASSWORD)
    login_and_send(s.port, "bob", "another long password")
    with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
        c.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("alice", "not the password")
    s.wait_captured(2)


def test_example_config_teaches_one_store():
    text = (ROOT / "etc" / "sluice.conf.example").read_text()
    assert "users add" not in text
    active = [l for l in text.splitlines() if l.strip().startswith("users_file")]
    assert active == [], active
