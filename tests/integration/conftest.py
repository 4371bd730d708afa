"""Black-box fixtures: start the real `sluice` binary in a temporary directory
with free ports, talk to it with real clients, read what it captured."""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SLUICE_BIN", str(ROOT / "build" / "sluice"))
PASSWORD = "correct horse battery"


_given_ports = set()


def free_port():
    """A port nothing listens on, never one this process handed out before:
    the kernel may offer a just-closed port again, and a daemon given the
    same port for two listeners fails to start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls cond() until it returns a true value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Sluice:
    def __init__(self, workdir: Path, env=None, config_text=None):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.var = self.dir / "var"
        self.port = free_port()
        self.tls_port = free_port()
        self.http_port = free_port()
        self.api_port = free_port()
        self.log_path = self.dir / "sluice.log"
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("SLUICE_") and k not in ("SLUICE_TESTDATA", "SLUICE_SOURCE_ROOT"):
                del self.env[k]
        self.env.update({
            "SLUICE_SERVER_LISTEN_SUBMISSION": f"127.0.0.1:{self.port}",
            "SLUICE_SERVER_LISTEN_SMTPS": f"127.0.0.1:{self.tls_port}",
            "SLUICE_SERVER_VAR_DIR": str(self.var),
            "SLUICE_SERVER_HOSTNAME": "relay.test",
            "SLUICE_SERVER_SHUTDOWN_GRACE": "10s",
            "SLUICE_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "SLUICE_API_LISTEN": f"127.0.0.1:{self.api_port}",
            # the tests run as root; test_privileges.py covers the drop to [server] user
            "SLUICE_SERVER_USER": "root",
        })
        if config_text is not None:
            cfg = self.dir / "sluice.conf"
            cfg.write_text(config_text)
            self.env["SLUICE_CONFIG"] = str(cfg)
        # The embedded default (relay_networks = auto) lets loopback send
        # without AUTH in capture-only mode; the tests ask for AUTH unless
        # they say otherwise.
        if not (config_text and "relay_networks" in config_text):
            self.env["SLUICE_SERVER_RELAY_NETWORKS"] = ""
        self.env.update(env or {})
        self.proc = None
        self._log_offset = 0

    # -- process control --
    def cli(self, *args, input=None, check=True):
        r = subprocess.run([BIN, *args], env=self.env, cwd=self.dir, input=input,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"sluice {' '.join(args)} failed: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def add_user(self, name="app", password=PASSWORD):
        self.cli("creds", "add", name, "--password", "--init", input=password + "\n")

    def start(self, wait=True, prefix=(), preexec_fn=None):
        """prefix: a command that runs the daemon (e.g. faketime); preexec_fn:
        runs in the child before exec (e.g. to lower resource limits)."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*prefix, BIN, "serve"], env=self.env, cwd=self.dir,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec_fn)
        if wait:
            wait_for(lambda: self.proc.poll() is not None or
                     any(e.get("event") == "server.ready" for e in self.events(since_start=True)),
                     what="server.ready")
            assert self.proc.poll() is None, self.log_text()
        return self

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.logf.close()
        self.proc = None

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    # -- observation --
    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name=None, since_start=False):
        out = []
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        if since_start:
            data = data[self._log_offset:]
        for line in data.decode(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if name is None or e.get("event") == name:
                out.append(e)
        return out

    def captured(self):
        """Every captured message: dicts with 'envelope' and raw 'data' bytes."""
        cap = self.var / "capture"
        msgs = []
        if cap.exists():
            for eml in sorted(cap.glob("*.eml")):
                env = json.loads(eml.with_suffix(".json").read_text())
                msgs.append({"envelope": env, "data": eml.read_bytes(), "path": eml})
        return msgs

    def wait_captured(self, n, timeout=15):
        return wait_for(lambda: len(self.captured()) >= n and self.captured(), timeout,
                        f"{n} captured messages")

    def queue(self, *args):
        r = self.cli("queue", "--json", *args, check=False)
        if not r.stdout.strip():
            return {"ok": False, "stderr": r.stderr}
        doc = json.loads(r.stdout)
        # a failure is the CLI's error shape {"error": {"code", "message"}}
        return {"ok": False, **doc} if "error" in doc else doc


def legacy_users_file(path: Path, users):
    """Writes a users file in the retired format ("name:$argon2id$..." lines,
    what `sluice users add` used to write) for {name: password}; the hashes
    are the argon2id ones sluice itself makes, taken from a scratch store."""
    import sqlite3
    db = path.parent / (path.name + ".scratch.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_AUTH_CREDS_DB"] = str(db)
    for name, password in users.items():
        r = subprocess.run([BIN, "creds", "add", name, "--password", "--init"], env=env,
                           cwd=path.parent, input=password + "\n", capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT name, password_hash FROM creds ORDER BY id").fetchall()
    path.write_text("# users file\n" + "".join(f"{n}:{h}\n" for n, h in rows))
    for f in path.parent.glob(path.name + ".scratch.db*"):
        f.unlink()
    return path


@pytest.fixture
def make_sluice(tmp_path):
    started = []

    def make(name="relay", **kw):
        s = Sluice(tmp_path / name, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop(signal.SIGKILL)


@pytest.fixture
def sluice(make_sluice):
    """A running relay with one AUTH user 'app' and plaintext AUTH allowed on loopback."""
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    s.add_user("app")
    return s.start()


# SLUICE_BIN may be relative to the directory pytest runs from, but the
# daemon and the CLI run with cwd set to their work directory.
BIN = str(Path(BIN).resolve()) if os.sep in BIN else BIN


# Address from which the module-wide relay accepts mail without AUTH (any
# 127/8 address reaches the loopback interface on Linux).
RELAY_NET_SOURCE = "127.0.0.2"


@pytest.fixture(scope="module")
def shared_sluice(tmp_path_factory):
    """One running relay for a whole test module, for tests that do not
    depend on a fresh daemon: user 'app' with plaintext AUTH on loopback, and
    clients connecting from RELAY_NET_SOURCE may send without AUTH (which
    spares the password hash where AUTH is not what a test is about)."""
    s = Sluice(tmp_path_factory.mktemp("shared"), env={
        "SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
        "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32",
    })
    s.add_user("app")
    s.start()
    yield s
    s.stop(signal.SIGKILL)


# ---- upstream servers (tests/support/upstream.py on aiosmtpd) ----

SUPPORT = ROOT / "tests" / "support"


class Upstream:
    def __init__(self, workdir: Path, *args):
        self.dir = workdir
        self.store = workdir / "store"
        self.control = workdir / "control"
        self.control.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SUPPORT / "upstream.py"), "--port", "0",
             "--store", str(self.store), "--control", str(self.control), *args],
            stdout=subprocess.PIPE, stderr=open(workdir / "upstream.err", "w"), text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), f"upstream did not start: {line!r} " + \
            (workdir / "upstream.err").read_text()
        self.port = int(line.split()[1])

    def messages(self):
        out = []
        if self.store.exists():
            for j in sorted(self.store.glob("*.json")):
                meta = json.loads(j.read_text())
                meta["data"] = j.with_suffix(".eml").read_bytes()
                out.append(meta)
        return out

    def events(self):
        p = self.store / "events.jsonl"
        if not p.exists():
            return []
        return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

    def set(self, name, content=""):
        (self.control / name).write_text(content)

    def clear(self, name):
        (self.control / name).unlink(missing_ok=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["sh", str(SUPPORT / "certs.sh"), str(d)], check=True, capture_output=True)
    return d


@pytest.fixture
def make_upstream(tmp_path):
    ups = []

    def make(*args, name=None):
        u = Upstream(tmp_path / (name or f"upstream{len(ups)}"), *args)
        ups.append(u)
        return u

    yield make
    for u in ups:
        u.stop()
