"""Two relays sharing one PostgreSQL store (docs/STORE.md): a credential made
once is seen by both, a daily quota holds across both under concurrent load,
a node killed with SIGKILL delivers every message it acknowledged once it is
started again, and a store that goes away gets 4xx until it is back.

The test starts its own PostgreSQL (initdb into a temporary folder, run as
the postgres user when the suite runs as root); it skips, saying why, only
when no PostgreSQL can be started."""
import glob
import json
import os
import pwd
import shutil
import smtplib
import subprocess
import tempfile
import threading
import uuid

import pytest

from conftest import PASSWORD, ROOT, free_port, wait_for


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class Postgres:
    def __init__(self):
        self.bin = pg_bin()
        if not self.bin:
            pytest.skip("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb)")
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
                self.user = "postgres"
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL")
        # A root unpacked into a 0700 folder (a chroot) has a "/" that only
        # root may pass; PostgreSQL runs as postgres and must reach its
        # programs. Such a "/" gets the mode of a normal system, 0755, while
        # the server runs, and its own mode back afterwards.
        self.root_mode = None
        if self.user and not os.stat("/").st_mode & 0o001:
            self.root_mode = os.stat("/").st_mode & 0o7777
            os.chmod("/", 0o755)
        self.dir = tempfile.mkdtemp(prefix="sluice-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        if self.user:
            shutil.chown(self.dir, self.user)
        r = self.run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                     "--no-sync")
        if r.returncode != 0:
            self.cleanup()
            pytest.skip(f"PostgreSQL initdb failed: {r.stderr.strip()[-300:]}")
        if not self.start():
            log = self.log()
            self.cleanup()
            pytest.skip(f"PostgreSQL did not start: {log[-300:]}")
        r = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                     "CREATE DATABASE sluice")
        assert r.returncode == 0, r.stderr
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/sluice"

    def run(self, tool, *args):
        cmd = [os.path.join(self.bin, tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)

    def log(self):
        p = os.path.join(self.dir, "pg.log")
        return open(p).read() if os.path.exists(p) else ""

    def start(self):
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "pg.log"), "-o",
                     opts, "-w", "-t", "60", "start")
        return r.returncode == 0

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def sql(self, q):
        r = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                     "sluice", "-At", "-c", q)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.root_mode is not None:
            os.chmod("/", self.root_mode)
            self.root_mode = None


@pytest.fixture(scope="module")
def pg():
    p = Postgres()
    yield p
    p.cleanup()


def node(make_sluice, pg, name):
    return make_sluice(name, env={
        "SLUICE_STORE_BACKEND": "postgresql",
        "SLUICE_STORE_URL": pg.url,
        "SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
    })


def login(relay, user):
    c = smtplib.SMTP("127.0.0.1", relay.port, timeout=30)
    c.ehlo("client.test")
    c.login(user, PASSWORD)
    return c


def message(tag):
    return (f"From: a@shop.example\r\nTo: b@dest.example\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@shop.example>\r\n\r\nbody {tag}\r\n")


def send(c, tag):
    """(code, text) of the reply that settled the message."""
    try:
        c.sendmail("a@shop.example", ["b@dest.example"], message(tag))
        return 250, ""
    except smtplib.SMTPSenderRefused as e:
        c.rset()
        return e.smtp_code, e.smtp_error.decode()
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error.decode()


def captured_tags(*relays):
    tags = []
    for r in relays:
        for m in r.captured():
            for line in m["data"].decode(errors="replace").splitlines():
                if line.startswith("Subject: "):
                    tags.append(line[9:].strip())
    return tags


def test_credentials_made_once_are_seen_by_both_nodes(make_sluice, pg):
    a, b = node(make_sluice, pg, "a"), node(make_sluice, pg, "b")
    a.cli("creds", "add", "both", "--password", "--scope", "send,read", input=PASSWORD + "\n")
    a.start()
    b.start()
    shown = b.cli("creds", "show", "both", "--json").stdout
    assert '"read"' in shown and '"send"' in shown
    for relay in (a, b):
        with login(relay, "both") as c:
            assert send(c, f"both-{relay.port}")[0] == 250
    # an API key made through a's CLI logs in on b (looked up by its key id)
    key = json.loads(a.cli("creds", "add", "keyed", "--api-key", "--json").stdout)["api_key"]
    c = smtplib.SMTP("127.0.0.1", b.port, timeout=30)
    c.ehlo("client.test")
    c.login("keyed", key)
    assert send(c, "by-api-key")[0] == 250
    c.quit()
    wait_for(lambda: len(captured_tags(a, b)) == 3, what="the three messages captured")
    # a revocation made through one node's CLI reaches the other's sessions
    with login(b, "both") as c:
        a.cli("creds", "revoke", "both")
        code, text = send(c, "after-revoke")
        assert code == 530, text


def test_rate_holds_across_two_nodes(make_sluice, pg):
    """A credential's rate counts in the shared store: 5/hour is 5 across
    both relays, where each relay's own limiter alone would let 5 through
    each."""
    a, b = node(make_sluice, pg, "ra"), node(make_sluice, pg, "rb")
    a.cli("creds", "add", "paced", "--password", "--rate", "5/hour", input=PASSWORD + "\n")
    a.start()
    b.start()
    codes = []
    with login(a, "paced") as ca, login(b, "paced") as cb:
        for k in range(4):
            codes.append(send(ca, f"ra-{k}"))
            codes.append(send(cb, f"rb-{k}"))
    accepted = [c for c, _ in codes if c == 250]
    refused = [t for c, t in codes if c == 450]
    assert len(accepted) == 5, codes
    assert len(refused) == 3, codes
    assert all("across all relays" in t for t in refused), refused


def test_quota_holds_across_two_nodes_under_concurrent_load(make_sluice, pg):
    quota, threads, per_thread = 15, 6, 8
    a, b = node(make_sluice, pg, "qa"), node(make_sluice, pg, "qb")
    a.cli("creds", "add", "metered", "--password", "--quota", f"{quota}/day",
          input=PASSWORD + "\n")
    a.start()
    b.start()
    results, lock = [], threading.Lock()

    def worker(i):
        relay = a if i % 2 else b
        with login(relay, "metered") as c:
            for k in range(per_thread):
                r = send(c, f"q-{i}-{k}")
                with lock:
                    results.append(r)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert len(results) == threads * per_thread
    accepted = [r for r in results if r[0] == 250]
    refused = [r for r in results if r[0] != 250]
    assert len(accepted) == quota, results
    assert all(code == 452 and "Daily quota of 15 messages" in text for code, text in refused)
    wait_for(lambda: len(captured_tags(a, b)) == quota, what=f"{quota} captured")
    assert pg.sql("SELECT value FROM counters WHERE key = 'quota:metered'") == str(quota)


def test_node_killed_under_load_delivers_what_it_acknowledged(make_sluice, pg):
    a, b = node(make_sluice, pg, "ka"), node(make_sluice, pg, "kb")
    a.cli("creds", "add", "loader", "--password", input=PASSWORD + "\n")
    a.start()
    b.start()
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def worker(i):
        relay = a if i % 2 else b
        try:
            c = login(relay, "loader")
        except (OSError, smtplib.SMTPException):
            return
        k = 0
        while not stop.is_set():
            tag = f"k-{i}-{k}-{uuid.uuid4().hex[:8]}"
            k += 1
            try:
                code, _ = send(c, tag)
            except (OSError, smtplib.SMTPException):
                return
            if code == 250:
                with lock:
                    acked.append(tag)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    wait_for(lambda: len(acked) >= 20, timeout=60, what="20 acknowledged messages")
    a.kill9()
    wait_for(lambda: len(acked) >= 30, timeout=60, what="b still accepting")
    stop.set()
    for t in ts:
        t.join(60)
    a.start()
    wait_for(lambda: set(acked) <= set(captured_tags(a, b)), timeout=60,
             what="every acknowledged message delivered")


def test_store_down_gives_4xx_and_recovers(make_sluice, pg):
    a = node(make_sluice, pg, "down")
    a.cli("creds", "add", "careful", "--password", "--quota", "1000/day", input=PASSWORD + "\n")
    a.start()
    with login(a, "careful") as c:
        assert send(c, "before")[0] == 250
        pg.stop()
        try:
            code, text = send(c, "during")
            assert code == 451 and "4.3.0" in text, (code, text)
            code, text = send(c, "during-again")
            assert code == 451, (code, text)
            # a new login cannot be checked: a temporary refusal, never let in
            # unchecked, and not a failed login of the client's address
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                login(a, "careful")
            assert refused.value.smtp_code == 454, refused.value
            assert a.events("auth.store_unavailable")
        finally:
            assert pg.start(), pg.log()
        # a lost connection is made again at most once a second
        wait_for(lambda: send(c, f"after-{uuid.uuid4().hex[:6]}")[0] == 250, timeout=20,
                 what="the store accepted again")
    with login(a, "careful") as c2:
        assert send(c2, "new-login-after")[0] == 250
    tags = captured_tags(a)
    assert "before" in tags and "during" not in tags and "during-again" not in tags


def test_store_unit_tests_against_postgresql(pg):
    """The store's unit test program (tests/unit/store/test_store.c), run
    against this PostgreSQL: the same verbs behave the same on both
    backends."""
    exe = ROOT / "build" / "tests" / "test_store"
    if not exe.exists():
        pytest.skip(f"{exe} not built (cmocka missing)")
    r = subprocess.run([str(exe)], env={**os.environ, "SLUICE_TEST_PG_URL": pg.url},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIPPED" not in r.stdout, r.stdout


def test_store_configuration_errors_are_named(make_sluice):
    s = make_sluice("badcfg", env={"SLUICE_STORE_BACKEND": "postgresql"})
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "[store] backend = postgresql needs [store] url" in r.stdout + r.stderr, r
    s.env["SLUICE_STORE_BACKEND"] = "mysql"
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "expected sqlite or postgresql" in r.stdout + r.stderr, r
    # nothing listens on the port: the CLI and the daemon say so and stop
    s.env.update({"SLUICE_STORE_BACKEND": "postgresql",
                  "SLUICE_STORE_URL": f"postgresql://sluice@127.0.0.1:{free_port()}/sluice"})
    r = s.cli("creds", "list", check=False)
    assert r.returncode == 1 and "cannot connect to PostgreSQL" in r.stdout + r.stderr, r
    s.start(wait=False)
    assert s.proc.wait(timeout=30) != 0
    assert "cannot connect to PostgreSQL" in s.log_text()
