#!/usr/bin/python3
"""HTTPS API submissions per second beside SMTP submission (plaintext, and
STARTTLS + AUTH with the same API key), on one
Sluice daemon relaying to one smtp-sink, both on loopback: sluice-loadgen
(plaintext, no AUTH, 10 KiB, c=50, one message per connection as the matrix
of bench/run.sh does, and kept-alive sessions) and sluice-api-loadgen (POST
/v1/messages, 10 KiB text, c=50 keep-alive TLS connections, Bearer key).
Every run is bounded by -d seconds; writes bench/results/api.md.

    /usr/bin/python3 bench/api.py [--seconds 10] [--build build] [--out FILE]
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_s(pid):
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_json(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and not r.stdout.strip():
        sys.exit(f"{cmd[0]} failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "api.md"))
    a = ap.parse_args()
    build = Path(a.build)
    sluice, lg, alg = build / "sluice", build / "sluice-loadgen", build / "sluice-api-loadgen"
    tmp = Path(tempfile.mkdtemp(prefix="sluice-api-bench."))
    procs = []
    try:
        sink_port, smtp_port, api_port = free_port(), free_port(), free_port()
        sink_out = open(tmp / "sink.out", "wb")
        user = ["-u", "nobody"] if os.getuid() == 0 else []
        procs.append(subprocess.Popen(["smtp-sink", *user, "-c", "-m", "512",
                                       f"127.0.0.1:{sink_port}", "1024"], stdout=sink_out,
                                      stderr=subprocess.DEVNULL))
        if not wait_port(sink_port):
            sys.exit("smtp-sink did not start")
        (tmp / "sluice.conf").write_text(f"""
[server]
hostname = sluice.bench.test
listen_submission = 127.0.0.1:{smtp_port}
listen_smtps =
var_dir = {tmp}/var
relay_networks = 127.0.0.1/32
user = root
[limits]
max_connections = 12000
max_connections_per_ip = 2000
[log]
file = {tmp}/sluice.log
level = warn
[http]
listen =
[api]
listen = 127.0.0.1:{api_port}
[upstream sink]
host = 127.0.0.1
port = {sink_port}
tls = none
verify = none
max_connections = 50
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env["SLUICE_CONFIG"] = str(tmp / "sluice.conf")
        r = subprocess.run([str(sluice), "creds", "add", "bench", "--api-key", "--init"],
                           env=env, capture_output=True, text=True, timeout=60)
        key = re.search(r"sk_[0-9a-f]+_[A-Za-z0-9_-]+", r.stdout + r.stderr).group(0)
        procs.append(subprocess.Popen([str(sluice), "serve"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(tmp / "serve.err", "wb")))
        if not (wait_port(smtp_port) and wait_port(api_port)):
            sys.exit("sluice did not start: " + (tmp / "serve.err").read_text())
        d = str(int(a.seconds))
        daemon = procs[-1].pid

        def measure(cmd):
            c0 = cpu_s(daemon)
            r = run_json(cmd)
            r["daemon_cpu_us_per_msg"] = (cpu_s(daemon) - c0) * 1e6 / max(1, r["accepted"])
            return r

        rows = []
        smtp = measure([str(lg), "--port", str(smtp_port), "-c", "50", "-d", d, "--size", "10240",
                         "--per-connection", "1", "--from", "app@bench.test", "--to",
                         "sink@bench.test", "--json"])
        rows.append(("SMTP plaintext, no AUTH, a connection per message", smtp))
        smtp_ka = measure([str(lg), "--port", str(smtp_port), "-c", "50", "-d", d, "--size",
                            "10240", "--per-connection", "1000", "--from", "app@bench.test",
                            "--to", "sink@bench.test", "--json"])
        rows.append(("SMTP plaintext, no AUTH, 1000 messages per connection", smtp_ka))
        tls_key = measure([str(lg), "--port", str(smtp_port), "-c", "50", "-d", d, "--size",
                            "10240", "--per-connection", "1", "--tls", "starttls", "--insecure",
                            "--auth", f"bench:{key}", "--from", "app@bench.test", "--to",
                            "sink@bench.test", "--json"])
        rows.append(("SMTP STARTTLS + AUTH PLAIN with the API key, a connection per message",
                     tls_key))
        tls_key_ka = measure([str(lg), "--port", str(smtp_port), "-c", "50", "-d", d, "--size",
                               "10240", "--per-connection", "1000", "--tls", "starttls",
                               "--insecure", "--auth", f"bench:{key}", "--from", "app@bench.test",
                               "--to", "sink@bench.test", "--json"])
        rows.append(("SMTP STARTTLS + AUTH PLAIN with the API key, 1000 messages per connection",
                     tls_key_ka))
        api = measure([str(alg), "--port", str(api_port), "--key", key, "-c", "50", "-d", d,
                        "--size", "10240", "--json"])
        rows.append(("HTTPS API POST /v1/messages, TLS 1.3, Bearer key, keep-alive", api))
        base = smtp["msg_per_s"]
        lines = [
            "# HTTPS API beside SMTP plaintext submission",
            "",
            f"One Sluice daemon relaying to one smtp-sink on loopback, {platform.node()} "
            f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"10 KiB messages, 50 concurrent clients, {a.seconds:g} s per row; the sink takes "
            "every message, so delivery runs at the same time on the same cores. Load average "
            f"{os.getloadavg()[0]:.1f} when the run ended (other work shares the machine: compare "
            "rows of one run, not runs). Daemon CPU is the user + system time of the sluice "
            "process during the row, per accepted message.",
            "",
            "    /usr/bin/python3 bench/api.py --seconds " + f"{a.seconds:g}",
            "",
            "| workload | msg/s | p50 ms | p99 ms | vs SMTP plaintext | daemon CPU µs/msg |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows:
            p50 = r.get("p50_ms", r.get("latency_ms", {}).get("p50", 0) if isinstance(
                r.get("latency_ms"), dict) else 0)
            p99 = r.get("p99_ms", r.get("latency_ms", {}).get("p99", 0) if isinstance(
                r.get("latency_ms"), dict) else 0)
            lines.append(f"| {name} | {r['msg_per_s']:,.0f} | {p50:.1f} | {p99:.1f} | "
                         f"{r['msg_per_s'] / base * 100:.0f}% | "
                         f"{r['daemon_cpu_us_per_msg']:,.0f} |")
        lines.append("")
        text = "\n".join(lines)
        print(text)
        print(json.dumps({n: r for n, r in rows}, indent=1), file=sys.stderr)
        Path(a.out).write_text(text)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
