"""`sluice queue export` / `import`: the spool of a stopped node moves to
another node, with envelopes, recipient states and holds; imported mail is
delivered once, a second import of the same messages adds nothing, and
damaged or foreign files are refused with the line at fault."""
import email
import json
import smtplib

from conftest import wait_for

BASE = """
[server]
relay_networks = 127.0.0.1/32
[queue]
retry_base = 1s
retry_cap = 2s
[upstream main]
host = 127.0.0.1
port = {port}
tls = none
verify = none
timeout = 5s
connect_timeout = 2s
"""


def send(s, rcpts, tag):
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        msg = (f"From: app@shop.test\r\nTo: {rcpts[0]}\r\nSubject: {tag}\r\n"
               f"Message-ID: <{tag}@shop.test>\r\n\r\nbody of {tag}\r\n")
        c.sendmail("app@shop.test", list(rcpts), msg.encode())


def delivered(up):
    """(Message-ID, recipients) of every delivery the sink took."""
    out = []
    for m in up.messages():
        mid = email.message_from_bytes(m["data"])["Message-ID"].strip("<>")
        out.append((mid, tuple(m["rcpt_tos"])))
    return out


def listing(s):
    r = s.queue("list")
    assert r["ok"], r
    return {m["id"]: m for m in r["data"]}


def test_a_stopped_nodes_queue_moves_to_a_running_node(make_sluice, make_upstream, tmp_path):
    up = make_upstream("--rcpt-reply", "b@dest.test=451 4.3.0 not now",
                       "--rcpt-reply", "c@dest.test=451 4.3.0 not now")
    a = make_sluice("a", config_text=BASE.format(port=up.port)).start()
    send(a, ["a@dest.test", "b@dest.test"], "partly")
    wait_for(lambda: delivered(up) == [("partly@shop.test", ("a@dest.test",))], 15, "a delivered")
    send(a, ["c@dest.test"], "held")
    held_id = wait_for(lambda: [i for i, m in listing(a).items()
                                if m["recipients"][0]["address"] == "c@dest.test"], 10)[0]
    assert a.queue("hold", held_id)["ok"]

    # export needs the node stopped
    r = a.cli("queue", "export", str(tmp_path), check=False)
    assert r.returncode == 1 and "a daemon runs on var_dir" in r.stderr
    assert a.stop() == 0
    r = a.cli("queue", "export", str(tmp_path), "--json")
    out = json.loads(r.stdout)["data"]
    assert out["messages"] == 2 and out["removed"]
    export = tmp_path / out["file"].rsplit("/", 1)[1]
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["sluice_queue_export"] == 1
    assert json.loads(lines[-1]) == {"end": 2}
    msgs = {json.loads(l)["rcpts"][0]: json.loads(l) for l in lines[1:-1]}
    assert msgs["a@dest.test"]["rcpt_state"] == [1, 0] and msgs["c@dest.test"]["state"] == 1
    # the old node's spool no longer has them: started again, it sends nothing
    again = a.cli("queue", "export", str(tmp_path / "second.jsonl"), "--keep", "--json")
    assert json.loads(again.stdout)["data"]["messages"] == 0

    # the new node runs while the file comes in through its control socket
    b = make_sluice("b", config_text=BASE.format(port=up.port)).start()
    r = b.cli("queue", "import", str(export), "--json")
    assert json.loads(r.stdout)["data"] == {"imported": 2, "skipped": 0}
    assert not export.exists() and export.with_name(export.name + ".imported").exists()
    # the same messages again: nothing added twice
    r = b.cli("queue", "import", str(export) + ".imported", "--json")
    assert json.loads(r.stdout)["data"] == {"imported": 0, "skipped": 2}
    q = listing(b)
    assert len(q) == 2
    states = {m["recipients"][0]["address"]: m for m in q.values()}
    assert states["c@dest.test"]["state"] == "held"
    assert [x["state"] for x in states["a@dest.test"]["recipients"]] == ["delivered", "pending"]
    assert states["a@dest.test"]["sender"] == "app@shop.test"

    # the sink's scripted 451s are start options: a new sink without them
    up.stop()
    up2 = make_upstream()
    b.stop()
    b2 = make_sluice("b", config_text=BASE.format(port=up2.port))
    b2.start()
    wait_for(lambda: ("partly@shop.test", ("b@dest.test",)) in delivered(up2), 20,
             "b@ delivered after the move")
    held = [i for i, m in listing(b2).items() if m["state"] == "held"]
    assert len(held) == 1 and b2.queue("release", held[0])["ok"]
    wait_for(lambda: ("held@shop.test", ("c@dest.test",)) in delivered(up2), 20, "c@ delivered")
    wait_for(lambda: b2.queue("stats")["data"]["messages"] == 0, 10, "an empty queue")
    # each recipient got exactly one copy, a@ none after the move
    assert sorted(delivered(up2)) == [("held@shop.test", ("c@dest.test",)),
                                      ("partly@shop.test", ("b@dest.test",))]
    assert b2.stop() == 0


def test_import_without_a_daemon_and_bad_files(make_sluice, make_upstream, tmp_path):
    up = make_upstream()
    up.set("down")
    a = make_sluice("a", config_text=BASE.format(port=up.port)).start()
    send(a, ["x@dest.test"], "offline")
    wait_for(lambda: a.queue("stats")["data"]["messages"] == 1, 10)
    assert a.stop() == 0
    export = tmp_path / "q.jsonl"
    a.cli("queue", "export", str(export))

    b = make_sluice("b", config_text=BASE.format(port=up.port))
    # a truncated copy is refused at its end, where the trailer is missing;
    # the whole lines before it are imported
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(export.read_text().splitlines(keepends=True)[:-1]))
    r = b.cli("queue", "import", str(cut), check=False)
    assert r.returncode == 2 and "line 2: the file ends without its trailer line" in r.stderr
    assert "(1 imported before it)" in r.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\n')
    r = b.cli("queue", "import", str(foreign), check=False)
    assert "line 1: not an export file" in r.stderr
    bad = tmp_path / "bad.jsonl"
    lines = export.read_text().splitlines()
    m = json.loads(lines[1])
    m["rcpts"] = ["x@dest.test\nR evil@dest.test"]
    bad.write_text("\n".join([lines[0], json.dumps(m), lines[2]]) + "\n")
    r = b.cli("queue", "import", str(bad), check=False)
    assert "line 2: a recipient must be a non-empty string without control characters" \
        in r.stderr
    # the good file, with no daemon, straight into the spool: its message
    # came in with the truncated copy and is not added twice
    r = b.cli("queue", "import", str(export))
    assert "imported 0 messages, 1 skipped" in r.stdout
    up.clear("down")
    b.start()
    wait_for(lambda: delivered(up) == [("offline@shop.test", ("x@dest.test",))], 20,
             "delivered by the node it moved to")
    assert b.stop() == 0
