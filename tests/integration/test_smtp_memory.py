"""The in-flight memory budget: all messages being received share
max_inflight_bytes. A MAIL whose SIZE= does not fit and content that runs out
of it get 452 4.3.1; the transaction fails cleanly (nothing is stored, the
session goes on), and the memory comes back once a message is spooled or
dropped. BDAT chunks make the holding deterministic: the relay answers a
chunk only after it holds all of it."""
import pytest

from conftest import RELAY_NET_SOURCE, wait_for
from support_smtp import CaptureWatch, message, new_msgid, open_session, wait_captured_id

BUDGET = 1024 * 1024


@pytest.fixture
def budgeted(make_sluice):
    return make_sluice(env={"SLUICE_LIMITS_MAX_INFLIGHT_BYTES": "1MiB",
                            "SLUICE_LIMITS_MAX_MESSAGE_SIZE": "10MiB",
                            "SLUICE_SERVER_RELAY_NETWORKS": f"{RELAY_NET_SOURCE}/32"}).start()


def lines(n):
    """About n octets of 80-octet lines."""
    return (b"y" * 78 + b"\r\n") * (n // 80)


def bdat(c, chunk, last=False):
    c.send(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
    return c.reply()


def hold(c, msgid, size):
    """Starts a BDAT transaction and leaves `size` octets of it held."""
    c.expect("MAIL FROM:<app@sender.test>", 250)
    c.expect("RCPT TO:<rcpt@example.net>", 250)
    head = message(msgid, body=b"")
    r = bdat(c, head + lines(size - len(head)))
    assert r.code == 250, str(r)


def test_declared_size_over_the_budget_is_refused_at_mail(budgeted):
    with open_session(budgeted, auth=False) as c:
        c.expect(f"MAIL FROM:<app@sender.test> SIZE={BUDGET + 1}", 452, "4.3.1")
        c.expect(f"MAIL FROM:<app@sender.test> SIZE={BUDGET // 2}", 250, "2.1.0")


def test_budget_runs_out_during_content_then_comes_back(budgeted):
    watch = CaptureWatch(budgeted)
    with open_session(budgeted, auth=False) as a, open_session(budgeted, auth=False) as b:
        held = new_msgid()
        hold(a, held, 600 * 1024)  # its buffer has grown to the whole budget
        # the budget is taken: a declared size no longer fits ...
        b.expect("MAIL FROM:<app@sender.test> SIZE=100000", 452, "4.3.1")
        # ... and undeclared content is read, refused and not stored
        refused = new_msgid()
        b.expect("MAIL FROM:<app@sender.test>", 250)
        b.expect("RCPT TO:<rcpt@example.net>", 250)
        b.expect("DATA", 354)
        b.send(message(refused, body=lines(100000)) + b".\r\n")
        r = b.reply()
        assert (r.code, r.enhanced) == (452, "4.3.1"), str(r)
        # so is a BDAT chunk, answered at the chunk
        b.expect("MAIL FROM:<app@sender.test>", 250)
        b.expect("RCPT TO:<rcpt@example.net>", 250)
        r = bdat(b, message(new_msgid(), body=lines(50000)))
        assert (r.code, r.enhanced) == (452, "4.3.1"), str(r)
        b.expect("NOOP", 250)  # the session goes on
        # the held message is spooled: its memory is back
        r = bdat(a, b"", last=True)
        assert r.code == 250, str(r)
        wait_captured_id(budgeted, held)
        ok = new_msgid()
        assert b.send_message(message(ok, body=lines(100000))).code == 250
        wait_captured_id(budgeted, ok)
    assert [e for e in budgeted.events("smtp.rejected") if e.get("reason") == "memory"]
    watch.assert_only([held, ok])


def test_budget_comes_back_when_the_holder_leaves_or_resets(budgeted):
    with open_session(budgeted, auth=False) as b:
        for leave in ("RSET", "QUIT"):
            a = open_session(budgeted, auth=False)
            hold(a, new_msgid(), 600 * 1024)
            b.expect("MAIL FROM:<app@sender.test> SIZE=100000", 452, "4.3.1")
            if leave == "RSET":
                a.expect("RSET", 250)
                b.expect("MAIL FROM:<app@sender.test> SIZE=100000", 250)
                b.expect("RSET", 250)
                a.close()
            else:
                a.close()  # dropped without a word
                # the relay notices the close on its own: poll with MAIL
                def fits():
                    r = b.cmd("MAIL FROM:<app@sender.test> SIZE=100000")
                    if r.code == 250:
                        b.expect("RSET", 250)
                        return True
                    return False
                wait_for(fits, 5, "the budget released after the close")
