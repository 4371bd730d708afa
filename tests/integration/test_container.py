"""The container image and the Kubernetes manifests, run for real with podman:
the image built by deploy/container/build.sh (cached layers: a rebuild with
no change takes seconds), started with a volume, mail submitted from the host
over STARTTLS + AUTH, relayed over verified TLS with AUTH to a sink on the
host, a drain on SIGTERM, a restart that keeps the spool, and the pod of
deploy/kube/sluice.yaml run by `podman kube play`.

Skipped, naming the reason, where podman is missing or cannot run a
container here (no runtime, no cgroups, no network namespace)."""
import base64
import ctypes
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml

from conftest import PASSWORD, ROOT, free_port, wait_for

IMAGE = "localhost/sluice:test"
UID = 10025  # the sluice user of the image (deploy/container/Dockerfile)
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman_cmd():
    cmd = ["podman"]
    if Path("/usr/sbin/runc").exists():
        cmd += ["--runtime", "/usr/sbin/runc"]  # crun fails on some cgroup set-ups
    return cmd


def podman(*args, check=True, timeout=120, input=None):
    r = subprocess.run([*podman_cmd(), *args], capture_output=True, text=True,
                       timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def image():
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (scripts/deps.sh test installs it)")
    if os.geteuid() != 0:
        pytest.skip("these tests run rootful podman and need root")
    info = subprocess.run([*podman_cmd(), "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot work here: {info.stderr.strip()[-300:]}")
    # storing an image is the first thing that fails in a chroot (podman
    # remounts / to unpack layers): try it on a one-file image first
    probe_dir = Path(tempfile.mkdtemp())
    (probe_dir / "probe").write_text("probe\n")
    tar = subprocess.run(["tar", "-C", str(probe_dir), "-c", "probe"], capture_output=True)
    shutil.rmtree(probe_dir)
    imp = subprocess.run([*podman_cmd(), "import", "-", "localhost/sluice-probe:latest"],
                         input=tar.stdout, capture_output=True, timeout=120)
    if imp.returncode != 0:
        pytest.skip("podman cannot store an image here (a chroot without its own mount "
                    f"namespace?): {imp.stderr.decode(errors='replace').strip()[-300:]}")
    podman("rmi", "-f", "localhost/sluice-probe:latest", check=False)
    env = dict(os.environ, PODMAN=" ".join(podman_cmd()))
    t = time.monotonic()
    b = subprocess.run(["bash", str(ROOT / "deploy/container/build.sh"), IMAGE], env=env,
                       capture_output=True, text=True, timeout=900)
    if b.returncode != 0:
        # a machine where podman cannot run a container at all is skipped,
        # naming why; a build that fails where containers run is a failure
        base = "localhost/debian:12-slim"
        if podman("image", "exists", base, check=False).returncode != 0:
            pytest.skip(f"cannot make the base image {base} here: {b.stderr.strip()[-300:]}")
        r = subprocess.run([*podman_cmd(), "run", "--rm", *ULIMITS, base, "true"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            pytest.skip(f"podman cannot run a container here: {r.stderr.strip()[-300:]}")
        raise AssertionError(f"image build failed:\n{b.stdout[-3000:]}\n{b.stderr[-3000:]}")
    print(f"image build: {time.monotonic() - t:.1f} s")
    probe = subprocess.run([*podman_cmd(), "run", "--rm", *ULIMITS, IMAGE, "--version"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-300:]}")
    return IMAGE


def argon2id_hash(password):
    """An encoded argon2id hash made by libargon2 (the library Sluice links)."""
    lib = ctypes.CDLL("libargon2.so.1")
    out = ctypes.create_string_buffer(256)
    salt = os.urandom(16)
    pw = password.encode()
    rc = lib.argon2id_hash_encoded(ctypes.c_uint32(2), ctypes.c_uint32(19456), ctypes.c_uint32(1),
                                   pw, ctypes.c_size_t(len(pw)), salt, ctypes.c_size_t(16),
                                   ctypes.c_size_t(32), out, ctypes.c_size_t(256))
    assert rc == 0, rc
    return out.value.decode()


def readyz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, None


def events(name):
    r = podman("logs", name, check=False)
    out = []
    for line in (r.stdout + r.stderr).splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def starttls(c, cafile):
    """STARTTLS verifying the relay's certificate for its name, relay.test
    (smtplib checks the name it connected to, here 127.0.0.1)."""
    c._host = "relay.test"
    c.starttls(context=ssl.create_default_context(cafile=str(cafile)))


def submit(port, cafile, subject, user="app", password=PASSWORD):
    msg = EmailMessage()
    msg["From"] = "app@shop.test"
    msg["To"] = "to@dest.test"
    msg["Subject"] = subject
    msg.set_content(f"body of {subject}\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo("client.test")
        starttls(c, cafile)
        c.ehlo("client.test")
        c.login(user, password)
        c.send_message(msg)


def subjects(up):
    out = []
    for m in up.messages():
        for line in m["data"].split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return out


def queue_stats(name):
    r = podman("exec", name, "sluice", "queue", "stats", "--json")
    return json.loads(r.stdout)["data"]


class Node:
    """One container of the image with its own volume and published ports."""

    def __init__(self, image, tmp, upstream, certs):
        self.image = image
        self.name = "sluice-test-" + uuid.uuid4().hex[:8]
        self.volume = self.name + "-spool"
        self.port, self.http = free_port(), free_port()
        # secrets as a platform mounts them: owner-only files of the sluice user
        self.secrets = tmp / "secrets"
        self.secrets.mkdir()
        for name, value in {"username": "relay\n", "password": "upstream pass\n"}.items():
            (self.secrets / name).write_text(value)
        shutil.copy(certs / "ca.pem", self.secrets / "ca.pem")
        for f in self.secrets.iterdir():
            os.chown(f, UID, UID)
            f.chmod(0o600)
        os.chown(self.secrets, UID, UID)
        self.upstream = upstream
        podman("volume", "create", self.volume)

    def run(self):
        env = {
            "SLUICE_SERVER_HOSTNAME": "relay.test",
            "SLUICE_SERVER_SHUTDOWN_GRACE": "20s",
            "SLUICE_QUEUE_RETRY_BASE": "1s",
            "SLUICE_QUEUE_RETRY_CAP": "2s",
            "SLUICE_UPSTREAM_MAIN_HOST": "host.containers.internal",
            "SLUICE_UPSTREAM_MAIN_PORT": str(self.upstream.port),
            "SLUICE_UPSTREAM_MAIN_TLS_SERVER_NAME": "localhost",
            "SLUICE_UPSTREAM_MAIN_CA_FILE": "/run/secrets/sluice/ca.pem",
            "SLUICE_UPSTREAM_MAIN_AUTH": "plain",
            "SLUICE_UPSTREAM_MAIN_USERNAME_FILE": "/run/secrets/sluice/username",
            "SLUICE_UPSTREAM_MAIN_SECRET_FILE": "/run/secrets/sluice/password",
            "SLUICE_UPSTREAM_MAIN_CONNECT_TIMEOUT": "3s",
            "SLUICE_UPSTREAM_MAIN_TIMEOUT": "10s",
        }
        args = ["run", "-d", "--name", self.name, *ULIMITS,
                "-p", f"127.0.0.1:{self.port}:2525", "-p", f"127.0.0.1:{self.http}:9025",
                "-v", f"{self.volume}:/var/lib/sluice",
                "-v", f"{self.secrets}:/run/secrets/sluice:ro"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        podman(*args, self.image)
        wait_for(lambda: readyz(self.http)[0] == 200 or not self.running(), 60, "readyz 200")
        assert self.running(), podman("logs", self.name, check=False).stderr

    def running(self):
        r = podman("inspect", self.name, "--format", "{{.State.Running}}", check=False)
        return r.stdout.strip() == "true"

    def exit_code(self):
        return int(podman("inspect", self.name, "--format", "{{.State.ExitCode}}").stdout)

    def rm(self):
        podman("rm", "-f", "-t", "0", self.name, check=False)

    def cleanup(self):
        self.rm()
        podman("volume", "rm", "-f", self.volume, check=False)


@pytest.fixture
def node(image, tmp_path, make_upstream, certs):
    up = make_upstream("--host", "0.0.0.0", "--tls", "starttls", "--cert", f"{certs}/server.pem",
                       "--key", f"{certs}/server.key", "--require-starttls",
                       "--user", "relay", "--password", "upstream pass", "--auth-required")
    n = Node(image, tmp_path, up, certs)
    yield n
    n.cleanup()


def test_image_relays_drains_on_sigterm_and_keeps_the_spool(node, tmp_path):
    up = node.upstream
    node.run()
    # the image runs as its own user with no writable configuration
    assert podman("exec", node.name, "id", "-u").stdout.strip() == str(UID)
    node_ca = tmp_path / "relay-cert.pem"
    node_ca.write_text(podman("exec", node.name, "cat", "/var/lib/sluice/tls/cert.pem").stdout)
    podman("exec", "-i", node.name, "sluice", "creds", "add", "app", "--password",
           input=PASSWORD + "\n")
    # an unauthenticated client from outside is refused (not in relay_networks)
    with smtplib.SMTP("127.0.0.1", node.port, timeout=20) as c:
        c.ehlo("client.test")
        code, _ = c.mail("app@shop.test")
        assert code == 530

    submit(node.port, node_ca, "first")
    wait_for(lambda: "first" in subjects(up), 30, "first at the sink")
    auth = [e for e in up.events() if e.get("event") == "auth"]
    assert auth and auth[-1]["user"] == "relay" and auth[-1]["ok"]

    # the sink goes down: the relay stays ready and queues
    up.set("down")  # new connections get 421; one kept open gets 451 after the data
    up.set("data-reply", "451 4.3.0 try again later")
    submit(node.port, node_ca, "queued while down")
    wait_for(lambda: any(e.get("event") in ("queue.deferred", "queue.held")
                         for e in events(node.name)), 30, "the message deferred or held")
    assert queue_stats(node.name)["messages"] == 1
    code, body = readyz(node.http)
    assert code == 200, body

    # SIGTERM in the middle of a transaction: the session finishes, new
    # connections are refused, readiness drops, the process exits 0
    c = smtplib.SMTP("127.0.0.1", node.port, timeout=30)
    c.ehlo("client.test")
    starttls(c, node_ca)
    c.ehlo("client.test")
    c.login("app", PASSWORD)
    assert c.mail("app@shop.test")[0] == 250
    assert c.rcpt("to@dest.test")[0] == 250
    podman("kill", "--signal", "TERM", node.name)
    wait_for(lambda: any(e.get("event") == "server.stopping" for e in events(node.name)), 20,
             "server.stopping")
    assert readyz(node.http)[0] == 503
    code, _ = c.data(b"From: app@shop.test\r\nTo: to@dest.test\r\nSubject: during drain\r\n\r\nx\r\n")
    assert code == 250
    c.quit()
    wait_for(lambda: not node.running(), 30, "the container to exit")
    assert node.exit_code() == 0
    stopped = [e for e in events(node.name) if e.get("event") == "server.stopped"]
    assert stopped, "no server.stopped in the log"
    assert not any(e.get("event") == "server.grace_expired" for e in events(node.name))

    # a new container on the same volume delivers what was queued, once
    node.rm()
    up.clear("down")
    up.clear("data-reply")
    node.run()
    wait_for(lambda: {"queued while down", "during drain"} <= set(subjects(up)), 60,
             "the queued messages after the restart")
    wait_for(lambda: queue_stats(node.name)["messages"] == 0, 30, "an empty queue")
    got = subjects(up)
    assert sorted(got) == sorted(["first", "queued while down", "during drain"]), got


def kube_manifest(tmp_path, smtp_port, http_port, up_port, certs):
    """deploy/kube/sluice.yaml as written, with this run's image, ports,
    upstream and a client credential: the objects the Helm chart renders."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/kube/sluice.yaml").read_text()))
    b64 = lambda v: base64.b64encode(v.encode()).decode()
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind == "ConfigMap":
            d["data"].update({
                "SLUICE_UPSTREAM_MAIN_HOST": "host.containers.internal",
                "SLUICE_UPSTREAM_MAIN_PORT": str(up_port),
                "SLUICE_UPSTREAM_MAIN_TLS_SERVER_NAME": "localhost",
                # the test CA is baked into the pod's environment as a file path
                "SLUICE_UPSTREAM_MAIN_CA_FILE": "/var/lib/sluice/test-ca.pem",
            })
        elif kind == "Secret" and name == "sluice-credentials":
            d["data"]["users"] = b64("app:" + argon2id_hash("app password"))
        elif kind == "PersistentVolumeClaim":
            d["metadata"]["name"] = VOLUME
        elif kind == "Pod":
            spec = d["spec"]
            for c in spec["initContainers"] + spec["containers"]:
                c["image"] = IMAGE
                for p in c.get("ports", []):
                    if "hostPort" in p:
                        p["hostPort"] = smtp_port if p["containerPort"] == 2525 else http_port
            for v in spec["volumes"]:
                if "persistentVolumeClaim" in v:
                    v["persistentVolumeClaim"]["claimName"] = VOLUME
    out = tmp_path / "sluice.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    return out


VOLUME = "sluice-test-kube-spool"


def test_kube_play_runs_the_manifests(image, tmp_path, make_upstream, certs):
    up = make_upstream("--host", "0.0.0.0", "--tls", "starttls", "--cert", f"{certs}/server.pem",
                       "--key", f"{certs}/server.key", "--user", "relay",
                       "--password", "change me", "--auth-required")
    smtp_port, http_port = free_port(), free_port()
    manifest = kube_manifest(tmp_path, smtp_port, http_port, up.port, certs)
    podman("volume", "rm", "-f", VOLUME, check=False)
    # the CA the upstream's certificate is signed by, on the pod's volume
    podman("volume", "create", VOLUME)
    mount = podman("volume", "mount", VOLUME).stdout.strip()
    shutil.copy(certs / "ca.pem", Path(mount) / "test-ca.pem")
    os.chown(Path(mount) / "test-ca.pem", UID, UID)
    play = ROOT / "deploy/kube/play.sh"

    def kube(*args, check=True):
        r = subprocess.run(["bash", str(play), *args], capture_output=True, text=True,
                           timeout=180)
        if check and r.returncode != 0:
            raise AssertionError(f"play.sh {' '.join(args)}: {r.stdout}\n{r.stderr}")
        return r

    kube(str(manifest))
    try:
        wait_for(lambda: readyz(http_port)[0] == 200, 60, "the pod ready")
        pod = "sluice-0-sluice"
        node_ca = tmp_path / "relay-cert.pem"
        node_ca.write_text(podman("exec", pod, "cat", "/var/lib/sluice/tls/cert.pem").stdout)
        # the init container imported the credential of the Secret
        submit(smtp_port, node_ca, "through the pod", user="app", password="app password")
        wait_for(lambda: "through the pod" in subjects(up), 30, "the pod's message at the sink")
        # the upstream user name and password came from the Secret, as files
        auth = [e for e in up.events() if e.get("event") == "auth"]
        assert auth and auth[-1]["user"] == "relay" and auth[-1]["ok"]
        mode = podman("exec", pod, "stat", "-c", "%a %U", "/run/sluice/secrets/password").stdout
        assert mode.split() == ["600", "sluice"]
    finally:
        kube("--down", str(manifest), check=False)
        podman("volume", "rm", "-f", VOLUME, check=False)
