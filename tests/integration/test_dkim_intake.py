"""DKIM signing of accepted mail, checked by an independent implementation
(dkimpy): both algorithms at once, only for domains with keys, and key
rotation by SIGHUP without a restart."""
import json
import smtplib

import dkim

from conftest import wait_for


def keygen(s, domain, selector, alg):
    r = s.cli("dkim", "keygen", "--domain", domain, "--selector", selector, "--algorithm", alg,
              "--out", str(s.var / "dkim"), "--json")
    return json.loads(r.stdout)


def send(s, sender, mid, body="Hello from the shop.\r\n"):
    msg = (f"From: Shop <{sender}>\r\nTo: customer@dest.test\r\nSubject: Your order\r\n"
           f"Message-ID: <{mid}>\r\n\r\n{body}").encode()
    with smtplib.SMTP("127.0.0.1", s.port) as c:
        c.sendmail(sender, ["customer@dest.test"], msg)


def captured(s, mid):
    for m in s.captured():
        if f"<{mid}>".encode() in m["data"]:
            return m["data"]
    return None


def signatures(data):
    """Every DKIM-Signature field, unfolded."""
    head = data.split(b"\r\n\r\n", 1)[0]
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return [f for f in fields if f.lower().startswith(b"dkim-signature:")]


def verify_all(data, records):
    def dnsfunc(name, timeout=5):
        return records[name.decode().rstrip(".")].encode()
    def one(i):
        try:
            return dkim.DKIM(data).verify(idx=i, dnsfunc=dnsfunc)
        except dkim.ValidationError:  # dkimpy raises for a body hash mismatch
            return False
    return [one(i) for i in range(len(signatures(data)))]


CONF = """
[server]
relay_networks = 127.0.0.1/32
"""


def test_signs_with_rsa_and_ed25519_and_dkimpy_verifies(make_sluice):
    s = make_sluice(config_text=CONF)
    k1 = keygen(s, "shop.test", "ed1", "ed25519")
    k2 = keygen(s, "shop.test", "rsa1", "rsa")
    s.start()
    assert len(s.events("dkim.key_loaded")) == 2
    send(s, "orders@shop.test", "sig1@shop.test", body="line one\r\n\r\n.dot line\r\n\r\n\r\n")
    data = wait_for(lambda: captured(s, "sig1@shop.test"), what="capture")
    sigs = signatures(data)
    assert len(sigs) == 2
    records = {k1["name"].rstrip("."): k1["value"], k2["name"].rstrip("."): k2["value"]}
    assert verify_all(data, records) == [True, True]
    # tampering breaks both
    bad = data.replace(b"line one", b"line 0ne")
    assert verify_all(bad, records) == [False, False]


def test_other_domains_are_not_signed(make_sluice):
    s = make_sluice(config_text=CONF)
    keygen(s, "shop.test", "ed1", "ed25519")
    s.start()
    send(s, "someone@other.test", "nosig@other.test")
    data = wait_for(lambda: captured(s, "nosig@other.test"), what="capture")
    assert signatures(data) == []


def test_added_message_id_and_date_are_signed(make_sluice):
    s = make_sluice(config_text=CONF)
    k = keygen(s, "shop.test", "ed1", "ed25519")
    s.start()
    msg = b"From: orders@shop.test\r\nTo: c@dest.test\r\nSubject: bare\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", s.port) as c:
        c.sendmail("orders@shop.test", ["c@dest.test"], msg)
    data = wait_for(lambda: s.captured() and s.captured()[0]["data"], what="capture")
    sig = signatures(data)[0].decode().lower()
    assert "message-id" in sig and "date" in sig
    assert verify_all(data, {k["name"].rstrip("."): k["value"]}) == [True]


def test_key_rotation_on_sighup(make_sluice):
    s = make_sluice(config_text=CONF + "\n[dkim]\nselectors = old._domainkey.shop.test\n")
    k_old = keygen(s, "shop.test", "old", "ed25519")
    k_new = keygen(s, "shop.test", "new", "ed25519")
    s.start()
    send(s, "a@shop.test", "rot1@shop.test")
    d1 = wait_for(lambda: captured(s, "rot1@shop.test"), what="first capture")
    assert b"s=old" in b"".join(signatures(d1)).replace(b" ", b"")
    cfg = s.dir / "sluice.conf"
    cfg.write_text(CONF + "\n[dkim]\nselectors = new._domainkey.shop.test\n")
    s.hup()
    wait_for(lambda: s.events("server.reloaded"), what="reload")
    send(s, "a@shop.test", "rot2@shop.test")
    d2 = wait_for(lambda: captured(s, "rot2@shop.test"), what="second capture")
    sig2 = b"".join(signatures(d2)).replace(b" ", b"")
    assert b"s=new" in sig2 and b"s=old" not in sig2
    records = {k_old["name"].rstrip("."): k_old["value"], k_new["name"].rstrip("."): k_new["value"]}
    assert verify_all(d2, records) == [True]
    # a selector without a key file is refused and the running keys stay
    cfg.write_text(CONF + "\n[dkim]\nselectors = missing._domainkey.shop.test\n")
    s.hup()
    wait_for(lambda: s.events("server.reload_failed"), what="reload refused")
    send(s, "a@shop.test", "rot3@shop.test")
    d3 = wait_for(lambda: captured(s, "rot3@shop.test"), what="third capture")
    assert b"s=new" in b"".join(signatures(d3)).replace(b" ", b"")
