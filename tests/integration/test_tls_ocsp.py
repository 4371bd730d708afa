"""OCSP stapling on the submission listeners: a test CA whose leaf names an
OCSP responder (OpenSSL's `openssl ocsp` server over a CA index), Sluice
fetching and stapling the status, `openssl s_client -status` reading it on
both ports and both TLS versions; a revoked certificate is not stapled, a
certificate without a responder staples nothing, and a SIGHUP reload starts
a new stapler."""
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, wait_for


def sh(*args, cwd):
    subprocess.run(list(args), cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path, ocsp_port: int, revoked: bool):
    """CA, a leaf for localhost with AIA OCSP pointing at ocsp_port, the CA
    index the responder reads, and the chain file Sluice loads."""
    d.mkdir(parents=True, exist_ok=True)
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-out", "ca.key", cwd=d)
    sh("openssl", "req", "-x509", "-new", "-key", "ca.key", "-subj", "/O=Sluice Test/CN=OCSP Test CA",
       "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca.pem", cwd=d)
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-out", "leaf.key", cwd=d)
    sh("openssl", "req", "-new", "-key", "leaf.key", "-subj", "/O=Sluice Test/CN=localhost",
       "-out", "leaf.csr", cwd=d)
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"authorityInfoAccess=OCSP;URI:http://127.0.0.1:{ocsp_port}\n")
    sh("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
       "-set_serial", "0x1234", "-days", "20", "-extfile", "leaf.ext", "-out", "leaf.pem", cwd=d)
    expiry = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 20 * 86400))
    if revoked:
        revtime = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 3600))
        line = f"R\t{expiry}\t{revtime},keyCompromise\t1234\tunknown\t/O=Sluice Test/CN=localhost\n"
    else:
        line = f"V\t{expiry}\t\t1234\tunknown\t/O=Sluice Test/CN=localhost\n"
    (d / "index.txt").write_text(line)
    (d / "chain.pem").write_text((d / "leaf.pem").read_text() + (d / "ca.pem").read_text())
    (d / "chain.pem").chmod(0o644)
    (d / "leaf.key").chmod(0o600)


class Responder:
    def __init__(self, d: Path, port: int):
        self.log = open(d / "ocsp.log", "wb")
        self.proc = subprocess.Popen(
            ["openssl", "ocsp", "-index", "index.txt", "-port", str(port),
             "-rsigner", "ca.pem", "-rkey", "ca.key", "-CA", "ca.pem", "-ndays", "1"],
            cwd=d, stdout=self.log, stderr=subprocess.STDOUT)
        # the responder serves one connection at a time and a bare connect
        # stalls it: its own start-up line says when it listens
        log = d / "ocsp.log"
        wait_for(lambda: b"ACCEPT" in log.read_bytes(), what="the OCSP responder")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def s_client(port, *extra):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-status",
                        "-servername", "localhost", *extra],
                       input="", capture_output=True, text=True, timeout=30)
    return r.stdout


def ocsp_config(d: Path, extra=""):
    return (f"[tls]\ncert = {d / 'chain.pem'}\nkey = {d / 'leaf.key'}\n{extra}"
            "[log]\nlevel = debug\n")


@pytest.fixture
def pki(tmp_path):
    def make(revoked=False):
        port = free_port()
        d = tmp_path / ("pki-revoked" if revoked else "pki")
        make_pki(d, port, revoked)
        return d, Responder(d, port)
    made = []

    def tracked(revoked=False):
        d, resp = make(revoked)
        made.append(resp)
        return d, resp
    yield tracked
    for r in made:
        r.stop()


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_status_is_stapled_on_both_ports(make_sluice, pki, version):
    d, _ = pki()
    s = make_sluice(config_text=ocsp_config(d)).start()
    ev = wait_for(lambda: s.events("tls.ocsp_stapled"), what="tls.ocsp_stapled")[0]
    assert ev["responder"].startswith("http://127.0.0.1:")
    implicit = s_client(s.tls_port, version)
    assert "OCSP Response Status: successful" in implicit, implicit
    assert "Cert Status: good" in implicit, implicit
    starttls = s_client(s.port, version, "-starttls", "smtp")
    assert "OCSP Response Status: successful" in starttls, starttls
    assert "Cert Status: good" in starttls, starttls


def test_revoked_certificate_is_not_stapled(make_sluice, pki):
    d, _ = pki(revoked=True)
    s = make_sluice(config_text=ocsp_config(d)).start()
    ev = wait_for(lambda: s.events("tls.ocsp_failed"), what="tls.ocsp_failed")[0]
    assert "revoked" in ev["error"], ev
    out = s_client(s.tls_port)
    assert "OCSP response: no response sent" in out, out
    assert not s.events("tls.ocsp_stapled")


def test_no_responder_means_no_stapling(make_sluice):
    # the default self-signed certificate names no responder
    s = make_sluice(env={"SLUICE_LOG_LEVEL": "debug"}).start()
    ev = wait_for(lambda: s.events("tls.ocsp"), what="tls.ocsp")[0]
    assert ev["stapling"] == "off"
    assert "names no OCSP responder" in ev["reason"]
    out = s_client(s.tls_port)
    assert "OCSP response: no response sent" in out, out


def test_off_by_config(make_sluice, pki):
    d, _ = pki()
    s = make_sluice(config_text=ocsp_config(d, "ocsp_stapling = false\n")).start()
    out = s_client(s.tls_port)
    assert "OCSP response: no response sent" in out, out
    assert not s.events("tls.ocsp_stapled")


def test_reload_starts_a_new_stapler(make_sluice, pki):
    d, _ = pki()
    s = make_sluice(config_text=ocsp_config(d)).start()
    wait_for(lambda: s.events("tls.ocsp_stapled"), what="tls.ocsp_stapled")
    s.hup()
    wait_for(lambda: len(s.events("tls.ocsp_stapled")) >= 2, what="a second tls.ocsp_stapled")
    out = s_client(s.tls_port)
    assert "Cert Status: good" in out, out
