"""The login cache and HMAC API keys, black box: a client that logs in again
with the same password is answered without argon2id (the cache-hit counter
moves, the argon2id counter does not); a wrong password after a cached
success still fails and counts as a failure; a password changed, a
credential revoked or deleted and made again with `sluice creds` is never
answered from the cache, without a reload; SIGHUP empties it; cache_ttl = 0
turns it off. API keys are checked by HMAC-SHA-256; a key an older release
stored as argon2id still logs in, is stored again in the HMAC form on its
first use, and keeps working from then on without argon2id."""
import base64
import os
import sqlite3

import pytest

from conftest import PASSWORD, legacy_users_file, wait_for
from support_smtp import Conn
from test_observability import scrape as metrics
from test_policy_auth import add_api_key, add_password, assert_sends_as

NEW_PASSWORD = "a brand new password"



def counters(s):
    m = metrics(s)
    return {k: m[f"sluice_auth_{k}"] for k in (
        "cache_hits_total", "cache_misses_total", "cache_entries",
        "argon2_verifications_total", "hmac_key_verifications_total")}


def login(s, user, password, mech="PLAIN"):
    """One connection, one AUTH; returns the reply code."""
    with Conn(s.port) as c:
        c.ehlo()
        if mech == "PLAIN":
            return c.auth_plain(user, password).code
        c.send(b"AUTH LOGIN\r\n")
        assert c.reply().code == 334
        c.send(base64.b64encode(user.encode()) + b"\r\n")
        assert c.reply().code == 334
        c.send(base64.b64encode(password.encode()) + b"\r\n")
        return c.reply().code


@pytest.fixture
def relay(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true"})
    add_password(s, "shop", "--allow-from", "*@shop.example")
    return s.start()


def test_repeated_logins_hit_the_cache(relay):
    before = counters(relay)
    assert login(relay, "shop", PASSWORD) == 235
    first = counters(relay)
    # the first login is checked with argon2id and remembered
    assert first["argon2_verifications_total"] == before["argon2_verifications_total"] + 1
    assert first["cache_misses_total"] == before["cache_misses_total"] + 1
    assert first["cache_entries"] == 1
    for mech in ("PLAIN", "LOGIN", "PLAIN", "LOGIN", "PLAIN"):
        assert login(relay, "shop", PASSWORD, mech) == 235
    after = counters(relay)
    assert after["cache_hits_total"] == first["cache_hits_total"] + 5
    assert after["argon2_verifications_total"] == first["argon2_verifications_total"]
    assert after["cache_entries"] == 1
    # a cached login is a full login: events, rules and accounting as before
    assert len(relay.events("auth.success")) == 6
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("shop", PASSWORD)
        assert_sends_as(relay, c, "shop")
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<someone@elsewhere.example>", 550, "5.7.1")
    assert counters(relay)["cache_hits_total"] == after["cache_hits_total"] + 1


def test_wrong_password_after_a_cached_success_fails(relay):
    assert login(relay, "shop", PASSWORD) == 235
    assert login(relay, "shop", PASSWORD) == 235
    before = counters(relay)
    failures = len(relay.events("auth.failure"))
    for wrong in ("correct horse batterY", PASSWORD + " ", "correct horse"):
        assert login(relay, "shop", wrong) == 535
    after = counters(relay)
    # each wrong one went to argon2id (the store, then the users file)
    assert after["argon2_verifications_total"] >= before["argon2_verifications_total"] + 3
    assert after["cache_hits_total"] == before["cache_hits_total"]
    assert after["cache_entries"] == 1  # failures are never remembered
    assert len(relay.events("auth.failure")) == failures + 3
    assert metrics(relay)["sluice_auth_failures_total"] >= 3
    # and the right one is still answered from the cache
    assert login(relay, "shop", PASSWORD) == 235
    assert counters(relay)["cache_hits_total"] == after["cache_hits_total"] + 1


def test_failed_logins_still_block_after_a_cached_success(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
                         "SLUICE_AUTH_FAILURES_BEFORE_DELAY": "5",
                         "SLUICE_AUTH_FAILURES_BEFORE_BLOCK": "3",
                         "SLUICE_AUTH_BLOCK_TIME": "1h"})
    add_password(s, "shop")
    s.start()
    assert login(s, "shop", PASSWORD) == 235
    assert login(s, "shop", PASSWORD) == 235  # cached now
    assert login(s, "shop", "wrong password") == 535
    assert login(s, "shop", "wrong password") == 535
    assert login(s, "shop", "wrong password") == 421  # blocked
    hits = counters(s)["cache_hits_total"]
    # the block comes before the cache: the remembered password gets 421 too
    assert login(s, "shop", PASSWORD) == 421
    assert counters(s)["cache_hits_total"] == hits
    assert s.events("security.auth_blocked")


def test_password_change_is_never_answered_from_the_cache(relay):
    assert login(relay, "shop", PASSWORD) == 235
    assert login(relay, "shop", PASSWORD) == 235
    hits = counters(relay)["cache_hits_total"]
    relay.cli("creds", "rotate", "shop", "--password", input=NEW_PASSWORD + "\n")
    # at once, without a reload: the old password fails, the new one works
    assert login(relay, "shop", PASSWORD) == 535
    c = counters(relay)
    assert c["cache_hits_total"] == hits
    assert login(relay, "shop", NEW_PASSWORD) == 235
    c2 = counters(relay)
    assert c2["argon2_verifications_total"] == c["argon2_verifications_total"] + 1
    assert login(relay, "shop", NEW_PASSWORD) == 235
    assert counters(relay)["cache_hits_total"] == hits + 1
    assert login(relay, "shop", PASSWORD) == 535


def test_revoked_or_recreated_credential_is_not_answered_from_the_cache(relay):
    add_password(relay, "other", password=NEW_PASSWORD)
    assert login(relay, "shop", PASSWORD) == 235
    assert login(relay, "other", NEW_PASSWORD) == 235
    hits = counters(relay)["cache_hits_total"]
    relay.cli("creds", "revoke", "shop")
    assert login(relay, "shop", PASSWORD) == 535
    # deleted and made again with the same password: a new credential, proved anew
    relay.cli("creds", "delete", "other")
    assert login(relay, "other", NEW_PASSWORD) == 535
    add_password(relay, "other", password=NEW_PASSWORD)
    argon2 = counters(relay)["argon2_verifications_total"]
    assert login(relay, "other", NEW_PASSWORD) == 235
    c = counters(relay)
    assert c["argon2_verifications_total"] == argon2 + 1
    assert c["cache_hits_total"] == hits


def test_sighup_empties_the_cache(relay):
    assert login(relay, "shop", PASSWORD) == 235
    assert login(relay, "shop", PASSWORD) == 235
    before = counters(relay)
    assert before["cache_entries"] == 1 and before["cache_hits_total"] >= 1
    reloads = len(relay.events("server.reloaded"))
    relay.hup()
    wait_for(lambda: len(relay.events("server.reloaded")) > reloads, what="server.reloaded")
    after = counters(relay)
    assert after["cache_entries"] == 0
    # counters are kept across the reload
    assert after["cache_hits_total"] == before["cache_hits_total"]
    assert login(relay, "shop", PASSWORD) == 235
    c = counters(relay)
    assert c["argon2_verifications_total"] == after["argon2_verifications_total"] + 1
    assert c["cache_hits_total"] == after["cache_hits_total"]
    assert login(relay, "shop", PASSWORD) == 235
    assert counters(relay)["cache_hits_total"] == after["cache_hits_total"] + 1


def test_cache_off(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
                         "SLUICE_AUTH_CACHE_TTL": "0"})
    add_password(s, "shop")
    s.start()
    before = counters(s)
    for _ in range(3):
        assert login(s, "shop", PASSWORD) == 235
    after = counters(s)
    assert after["argon2_verifications_total"] == before["argon2_verifications_total"] + 3
    assert after["cache_hits_total"] == 0 and after["cache_entries"] == 0


def test_cache_entries_expire(make_sluice):
    s = make_sluice(env={"SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK": "true",
                         "SLUICE_AUTH_CACHE_TTL": "1s"})
    add_password(s, "shop")
    s.start()
    assert login(s, "shop", PASSWORD) == 235
    argon2 = counters(s)["argon2_verifications_total"]

    # once a second has passed, the same login is checked with argon2id again
    def checked_again():
        assert login(s, "shop", PASSWORD) == 235
        return counters(s)["argon2_verifications_total"] > argon2
    wait_for(checked_again, timeout=10, what="the cached login to expire")


def test_api_keys_are_checked_by_hmac(relay):
    key = add_api_key(relay, "api", "--allow-from", "*@shop.example")
    (stored,), = relay_sql(relay, "SELECT api_key_hash FROM creds WHERE name = 'api'")
    assert stored.startswith("$hmac-sha256$v=1$") and key not in stored
    before = counters(relay)
    for user in ("api", "anything"):
        with Conn(relay.port) as c:
            c.ehlo()
            c.login(user, key)
            assert_sends_as(relay, c, "api")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert login(relay, "api", wrong) == 535
    after = counters(relay)
    assert after["argon2_verifications_total"] - before["argon2_verifications_total"] <= 2
    assert after["hmac_key_verifications_total"] >= before["hmac_key_verifications_total"] + 3


def relay_sql(s, sql, args=()):
    db = sqlite3.connect(s.var / "sluice.db", timeout=10)
    try:
        rows = db.execute(sql, args).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def argon2_hash_of(s, secret):
    """The argon2id hash older releases stored for API keys, made the way
    they made it (the users file uses the same function)."""
    path = s.dir / "argon2-users"
    legacy_users_file(path, {"legacy": secret})
    name, h = path.read_text().splitlines()[-1].split(":", 1)
    os.unlink(path)
    assert name == "legacy" and h.startswith("$argon2id$")
    return h


def test_legacy_argon2_api_key_is_upgraded_on_first_use(relay):
    key = add_api_key(relay, "api", "--allow-from", "*@shop.example")
    legacy = argon2_hash_of(relay, key)
    relay_sql(relay, "UPDATE creds SET api_key_hash = ? WHERE name = 'api'", (legacy,))
    # a wrong secret with the right id fails and does not touch the hash
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert login(relay, "api", wrong) == 535
    assert relay_sql(relay, "SELECT api_key_hash FROM creds WHERE name = 'api'") == [(legacy,)]
    # the first use is checked with argon2id, then stored as HMAC
    before = counters(relay)
    with Conn(relay.port) as c:
        c.ehlo()
        c.login("api", key)
        assert_sends_as(relay, c, "api")
    first = counters(relay)
    assert first["argon2_verifications_total"] == before["argon2_verifications_total"] + 1
    (stored,), = relay_sql(relay, "SELECT api_key_hash FROM creds WHERE name = 'api'")
    assert stored.startswith("$hmac-sha256$v=1$") and key not in stored
    # from then on without argon2id, many times
    for _ in range(3):
        with Conn(relay.port) as c:
            c.ehlo()
            c.login("api", key)
            assert_sends_as(relay, c, "api")
    after = counters(relay)
    assert after["argon2_verifications_total"] == first["argon2_verifications_total"]
    assert after["hmac_key_verifications_total"] >= first["hmac_key_verifications_total"] + 3
    assert login(relay, "api", wrong) == 535
    # and after a restart (the upgraded form is what the file holds)
    relay.stop()
    relay.start()
    assert login(relay, "api", key) == 235
    assert counters(relay)["argon2_verifications_total"] == 0
