#!/usr/bin/python3
"""Outage and recovery: how fast Sluice drains a backlog once its upstream
comes back, beside its live rate, and what the backlog does to memory.

1. live: the upstream (Postfix's smtp-sink) is up; sluice-loadgen submits for
   --live-seconds; the rate at which mail reaches the sink is the live rate.
2. outage: the sink stops; --messages are submitted and queued (deferred).
3. recovery: the sink starts again; the time until every queued message has
   reached it gives the drain rate. Meanwhile one client keeps submitting
   new mail, whose submission latency shows whether new mail waits behind
   the backlog.
RSS of the daemon is read before the outage, with the backlog queued, and
after the drain. Default retry settings: what a recovered upstream releases
is the daemon's doing, not a short retry_base's.

    bench/drain.py [--messages 100000] [--size 1024] [--out bench/results/drain.md]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver import Sink  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_until(pred, timeout, what, poll=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise SystemExit(f"drain: timed out waiting for {what}")


class Daemon:
    def __init__(self, binary, tmp, sink_port, log_level):
        self.port = free_port()
        self.http = free_port()
        self.var = tmp / "var"
        conf = tmp / "sluice.conf"
        conf.write_text(
            f"[server]\nlisten_submission = 127.0.0.1:{self.port}\nlisten_smtps =\n"
            f"var_dir = {self.var}\nrelay_networks = 127.0.0.1/32\nhostname = relay.bench\n"
            f"[http]\nlisten = 127.0.0.1:{self.http}\n[log]\nlevel = {log_level}\n"
            f"[upstream sink]\nhost = 127.0.0.1\nport = {sink_port}\ntls = none\nverify = none\n")
        self.log = open(tmp / "sluice.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env["SLUICE_CONFIG"] = str(conf)
        self.proc = subprocess.Popen([binary, "serve"], env=env, cwd=tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc.poll() is not None or self.listening(), 30, "sluice to listen")
        if self.proc.poll() is not None:
            raise SystemExit(f"drain: sluice exited: see {tmp / 'sluice.log'}")

    def listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_sink(port, out_path):
    f = open(out_path, "ab")
    p = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-c", "-m", "512", f"127.0.0.1:{port}", "1024"],
                         stdout=f, stderr=subprocess.STDOUT)
    wait_until(lambda: _connectable(port), 10, "smtp-sink")
    return p, f


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def loadgen(args, port, extra):
    cmd = [args.loadgen, "--port", str(port), "--size", str(args.size), "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SystemExit(f"drain: loadgen failed ({r.returncode}): {r.stdout}\n{r.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--live-seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--sluice", default=str(ROOT / "build" / "sluice"))
    ap.add_argument("--loadgen", default=str(ROOT / "build" / "sluice-loadgen"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "drain.md"))
    ap.add_argument("--timeout", type=int, default=1800, help="longest drain waited for (s)")
    ap.add_argument("--probe-seconds", type=int, default=5,
                    help="how long one client submits new mail once the sink is back")
    args = ap.parse_args()
    cmdline = " ".join(["bench/drain.py", *sys.argv[1:]])

    tmp = Path(tempfile.mkdtemp(prefix="sluice-drain-", dir=os.environ.get("BENCH_TMPDIR", "/var/tmp")))
    tmp.chmod(0o755)  # started as root, the daemon runs as user sluice and must reach var/
    sink_port = free_port()
    sink_out = tmp / "sink.out"
    sink, sink_f = start_sink(sink_port, sink_out)
    counter = Sink(sink_out)
    d = Daemon(args.sluice, tmp, sink_port, args.log_level)
    res = {}
    try:
        # 1. live
        res["rss_start_kib"] = rss_kib(d.proc.pid)
        base = counter.count()
        t0 = time.monotonic()
        live = loadgen(args, d.port, ["-c", str(args.concurrency), "-d", str(args.live_seconds)])
        wait_until(lambda: counter.count() - base >= live["accepted"], 120, "live mail at the sink")
        live_s = time.monotonic() - t0
        res["live_accepted"] = live["accepted"]
        res["live_rate"] = live["accepted"] / live_s
        res["live_submit_rate"] = live.get("msg_per_s")
        res["rss_live_kib"] = rss_kib(d.proc.pid)

        # 2. outage
        sink.terminate()
        sink.wait()
        sink_f.close()
        t0 = time.monotonic()
        fill = loadgen(args, d.port, ["-c", str(args.concurrency), "-n", str(args.messages)])
        res["fill_s"] = time.monotonic() - t0
        res["fill_accepted"] = fill["accepted"]
        queued = fill["accepted"]
        res["rss_backlog_kib"] = rss_kib(d.proc.pid)

        # 3. recovery
        sink_out = tmp / "sink2.out"  # a new smtp-sink counts from 0
        counter = Sink(sink_out)
        sink, sink_f = start_sink(sink_port, sink_out)
        base = 0
        t0 = time.monotonic()
        probe = subprocess.Popen([args.loadgen, "--port", str(d.port), "--size", str(args.size),
                                  "--json", "-c", "1", "-d", str(args.probe_seconds)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples = []  # (seconds since the sink came back, messages it has)
        end = t0 + args.timeout
        probe_n = None
        while time.monotonic() < end:
            samples.append((time.monotonic() - t0, counter.count()))
            if probe_n is None and probe.poll() is not None:
                out, err = probe.communicate()
                live_during = json.loads(out) if out.strip() else {}
                probe_n = live_during.get("accepted", 0)
            if probe_n is not None and samples[-1][1] >= queued + probe_n:
                break
            time.sleep(0.02)
        else:
            raise SystemExit("drain: the backlog was not delivered within --timeout")
        total = queued + probe_n
        first = lambda k: next(t for t, c in samples if c >= k)  # noqa: E731
        res["drain_marks"] = {f: first(f * total) for f in (0.5, 0.9, 0.99)}
        res["drain_s"] = first(total)
        res["drain_rate"] = total / res["drain_s"]
        res["probe"] = {"accepted": probe_n, "latency_ms": live_during.get("latency_ms", {})}
        time.sleep(3)  # the queue returns memory after the burst; let it settle
        res["rss_after_kib"] = rss_kib(d.proc.pid)
    finally:
        d.stop()
        sink.terminate()
        sink.wait()
        sink_f.close()

    lat = res["probe"]["latency_ms"]
    lines = [
        "# Outage and recovery: draining a backlog",
        "",
        f"Command: `{cmdline}` (as root, on this machine; {args.size}-byte messages, "
        f"{args.concurrency} clients, default retry settings, smtp-sink as the upstream)",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPUs: {os.cpu_count()}",
        "",
        "| phase | figure |",
        "|---|---:|",
        f"| live: submitted and delivered, upstream up ({args.live_seconds} s) | "
        f"{res['live_accepted']:,} msgs, {res['live_rate']:,.0f} msg/s |",
        f"| outage: messages queued | {res['fill_accepted']:,} in {res['fill_s']:.1f} s |",
        "| recovery: 50% / 90% / 99% of the backlog delivered after | "
        + " / ".join(f"{res['drain_marks'].get(f, float('nan')):.1f} s" for f in (0.5, 0.9, 0.99))
        + " |",
        f"| recovery: whole backlog and the new mail delivered after | {res['drain_s']:.1f} s |",
        f"| drain rate (backlog + new mail) / live rate | {res['drain_rate']:,.0f} / "
        f"{res['live_rate']:,.0f} msg/s |",
        f"| new mail during the drain: submissions, latency p50 / p99 | {res['probe']['accepted']:,}, "
        f"{lat.get('p50', float('nan')):.1f} / {lat.get('p99', float('nan')):.1f} ms |",
        f"| RSS at start / after live / with backlog / after drain | {res['rss_start_kib'] / 1024:.0f} / "
        f"{res['rss_live_kib'] / 1024:.0f} / {res['rss_backlog_kib'] / 1024:.0f} / "
        f"{res['rss_after_kib'] / 1024:.0f} MiB |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
