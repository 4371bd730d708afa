#!/usr/bin/python3
"""Submission workloads on the relays that bench/run.sh started, driven by
sluice-loadgen: plaintext without AUTH, STARTTLS + AUTH PLAIN with a password,
STARTTLS + AUTH with an API key, STARTTLS + AUTH + DKIM signing (Sluice's own
signer against Postfix + OpenDKIM), each at concurrency 50 with one connection
per 10 KiB message, and the password row also at concurrency 1 and 10. The
relays take turns run by run and the list is repeated; the medians go to a
Markdown table. Only loopback addresses are contacted; every wait is bounded."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver import MemorySampler, Sink, cpu_seconds, loadavg  # noqa: E402

SIZE = 10240
FROM, DKIM_LOCAL, TO = "app@bench.test", "app", "sink@bench.test"

# name, description, TLS, credential (None, "password" or "api_key"), DKIM, concurrency
WORKLOADS = [
    ("plain", "plaintext, no AUTH", "none", None, False, 50),
    ("tls-password", "STARTTLS + AUTH PLAIN, password", "starttls", "password", False, 50),
    ("tls-apikey", "STARTTLS + AUTH PLAIN, API key", "starttls", "api_key", False, 50),
    ("tls-password-dkim", "STARTTLS + AUTH PLAIN + DKIM signing", "starttls", "password", True, 50),
    ("tls-password-c1", "STARTTLS + AUTH PLAIN, password", "starttls", "password", False, 1),
    ("tls-password-c10", "STARTTLS + AUTH PLAIN, password", "starttls", "password", False, 10),
]


class Target:
    """One relay as the workloads see it: a port per workload, the processes
    whose CPU and memory count, and where to look for proof of signing."""

    def __init__(self, name, ports, roots, dkim_roots, log):
        self.name, self.ports, self.roots, self.dkim_roots, self.log = name, ports, roots, dkim_roots, log

    def root_pids(self, dkim):
        pids = []
        for r in self.roots + (self.dkim_roots if dkim else []):
            if isinstance(r, str):  # a pid file (Postfix's master)
                with open(r) as f:
                    pids.append(int(f.read().split()[0]))
            else:
                pids.append(r)
        return pids

    def alive(self):
        try:
            for p in self.root_pids(True):
                os.kill(p, 0)
            return True
        except (OSError, ValueError):
            return False

    def log_offset(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def count_in_log(self, since, needle):
        n = 0
        try:
            with open(self.log, "rb") as f:
                f.seek(since)
                for line in f:
                    if needle in line:
                        n += 1
        except OSError:
            pass
        return n


def loadgen_cmd(args, secrets, port, wl):
    name, _, tls, cred, dkim, conc = wl
    sender = f"{DKIM_LOCAL}@{args.dkim_domain}" if dkim else FROM
    cmd = [args.loadgen, "--host", "127.0.0.1", "--port", str(port), "--json", "-c", str(conc),
           "-d", str(args.seconds), "--size", str(SIZE), "--from", sender, "--to", TO]
    if tls != "none":
        cmd += ["--tls", tls, "--cafile", args.cafile, "--sni", args.sni]
    if cred:
        user = "app" if cred == "password" else "api"
        cmd += ["--auth", f"{user}:{secrets[cred]}"]
    return cmd


def run_one(args, secrets, sink, target, wl):
    name, _, _, _, dkim, conc = wl
    port = target.ports[name]
    problems = []
    sink.settle()
    base = sink.count()
    log_at = target.log_offset()
    pids = target.root_pids(dkim)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    sampler = MemorySampler(pids)
    sampler.start()
    cmd = loadgen_cmd(args, secrets, port, wl)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    t_accept = time.monotonic()
    try:
        rep = json.loads(r.stdout)
    except ValueError:
        sampler.finish()
        shown = " ".join(c if not c.startswith(("app:", "api:")) else c.split(":")[0] + ":***"
                         for c in cmd)
        return {"error": f"sluice-loadgen printed no report (exit {r.returncode}): {r.stderr[-400:]}",
                "command": shown}
    accepted = rep["accepted"]
    t_sink = sink.wait_for(base + accepted, time.monotonic() + 60)
    if t_sink is None:
        problems.append(f"the sink got {sink.count() - base} of {accepted} accepted messages within 60 s")
        t_sink = time.monotonic()
    cpu1 = sum(cpu_seconds(p) for p in pids)
    sampler.finish()
    if rep["failed"]:
        problems.append(f"{rep['failed']} of {rep['tried']} messages failed: {rep['errors']} "
                        f"{rep['reply_codes']} {rep['error_samples']}")
    if dkim and target.name == "postfix":
        signed = target.count_in_log(log_at, b"dkim-signed")
        if signed != accepted:
            problems.append(f"OpenDKIM signed {signed} of {accepted} accepted messages")
    if not target.alive():
        problems.append(f"{target.name} stopped during the run")
    return {
        "accepted": accepted, "failed": rep["failed"], "msg_s": rep["msg_per_s"],
        "e2e_msg_s": accepted / (t_sink - t0) if t_sink > t0 else 0,
        "p50": rep["latency_ms"]["p50"], "p90": rep["latency_ms"]["p90"],
        "p99": rep["latency_ms"]["p99"], "max": rep["latency_ms"]["max"],
        "cpu_per_1000": (cpu1 - cpu0) / accepted * 1000 if accepted else 0,
        "gen_cpu_per_1000": rep["cpu_s"] / accepted * 1000 if accepted else 0,
        "gen_cpu_share": rep["cpu_share"],
        "rss_mib": sampler.peak_rss / 1024, "pss_mib": sampler.peak_pss / 1024,
        "resumed": rep["tls_resumed"], "accept_s": t_accept - t0, "problems": problems,
    }


def med(runs, key):
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else None


def fmt(v, nd=0):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def report(args, results, started, elapsed, load0, load1):
    lines = [
        f"`{args.command_line}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{elapsed / 60:.1f} min; {args.seconds} s per run, {args.repeat} passes (medians; "
        f"msg/s also lowest–highest); 10 KiB messages, one connection per message, "
        f"sluice-loadgen on the same 2 CPUs. Load average {load0} at the start, {load1} at the end.",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}.",
        "",
        "| workload | conc | relay | msg/s | p50 ms | p99 ms | relay CPU s / 1000 msg | "
        "peak RSS MiB | peak PSS MiB | loadgen CPU s / 1000 msg | failed |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    problems = []
    for wl in WORKLOADS:
        name, desc, _, _, dkim, conc = wl
        for relay in args.relays:
            runs = [r for r in results.get((name, relay), []) if "error" not in r]
            errs = [r for r in results.get((name, relay), []) if "error" in r]
            for r in errs:
                problems.append(f"{name} / {relay}: {r['error']} ({r['command']})")
            for r in runs:
                problems += [f"{name} / {relay}: {p}" for p in r["problems"]]
            label = {"postfix": "Postfix + OpenDKIM" if dkim else "Postfix", "sluice": "Sluice"}[relay]
            if not runs:
                lines.append(f"| {desc} | {conc} | {label} | – | – | – | – | – | – | – | all runs failed |")
                continue
            lo, hi = min(r["msg_s"] for r in runs), max(r["msg_s"] for r in runs)
            lines.append(
                f"| {desc} | {conc} | {label} | {fmt(med(runs, 'msg_s'))} ({fmt(lo)}–{fmt(hi)}) | "
                f"{fmt(med(runs, 'p50'), 1)} | {fmt(med(runs, 'p99'), 1)} | "
                f"{fmt(med(runs, 'cpu_per_1000'), 2)} | {fmt(max(r['rss_mib'] for r in runs), 1)} | "
                f"{fmt(max(r['pss_mib'] for r in runs), 1)} | {fmt(med(runs, 'gen_cpu_per_1000'), 2)} | "
                f"{sum(r['failed'] for r in runs)} |")
    if len(args.relays) == 2:
        lines += ["", "| workload | conc | Sluice / Postfix msg/s | Sluice / Postfix CPU per message |",
                  "|---|---:|---:|---:|"]
        for name, desc, _, _, _, conc in WORKLOADS:
            p = [r for r in results.get((name, "postfix"), []) if "error" not in r]
            s = [r for r in results.get((name, "sluice"), []) if "error" not in r]
            if p and s and med(p, "msg_s") and med(p, "cpu_per_1000"):
                lines.append(f"| {desc} | {conc} | {med(s, 'msg_s') / med(p, 'msg_s'):.2f}× | "
                             f"{med(s, 'cpu_per_1000') / med(p, 'cpu_per_1000'):.2f}× |")
    lines += ["", "Problems seen: " + ("none" if not problems else "")]
    lines += [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n", problems


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--sink-out", required=True)
    ap.add_argument("--postfix", help="PLAIN_PORT:SUBMISSION_PORT:DKIM_PORT:MASTER_PID_FILE:OPENDKIM_PID:MAILLOG")
    ap.add_argument("--sluice", help="PORT:PID:LOG")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--secrets", required=True, help="file of password= and api_key= lines")
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--sni", required=True)
    ap.add_argument("--dkim-domain", required=True)
    ap.add_argument("--sluice-bin", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json-out")
    ap.add_argument("--command-line", default="bench/run.sh")
    args = ap.parse_args()
    secrets = dict(line.split("=", 1) for line in Path(args.secrets).read_text().splitlines() if "=" in line)

    targets = {}
    if args.postfix:
        plain, sub, dk, pidfile, dkim_pid, maillog = args.postfix.split(":", 5)
        ports = {w[0]: int(dk if w[4] else (plain if w[2] == "none" else sub)) for w in WORKLOADS}
        targets["postfix"] = Target("postfix", ports, [pidfile], [int(dkim_pid)], maillog)
    if args.sluice:
        port, pid, log = args.sluice.split(":", 2)
        targets["sluice"] = Target("sluice", {w[0]: int(port) for w in WORKLOADS}, [int(pid)], [], log)
        with open(log, "rb") as f:
            if f'"domain":"{args.dkim_domain}"'.encode() not in f.read():
                print(f"workloads: Sluice's log shows no DKIM key for {args.dkim_domain}", file=sys.stderr)
                sys.exit(1)
    args.relays = list(targets)
    sink = Sink(args.sink_out)
    started, t_start, load0 = time.time(), time.monotonic(), loadavg()

    # Warm-up: Postfix starts its daemons on demand, Sluice opens its upstream
    # connections, OpenDKIM loads its key; none of it is measured.
    warm = argparse.Namespace(**{**vars(args), "seconds": 2})
    for t in targets.values():
        for wl in (WORKLOADS[0], WORKLOADS[3]):
            subprocess.run(loadgen_cmd(warm, secrets, t.ports[wl[0]], wl[:5] + (10,)),
                           capture_output=True, timeout=120)

    results = {}
    for rnd in range(args.repeat):
        for wl in WORKLOADS:
            order = args.relays if rnd % 2 == 0 else list(reversed(args.relays))
            for relay in order:
                r = run_one(args, secrets, sink, targets[relay], wl)
                results.setdefault((wl[0], relay), []).append(r)
                if "error" in r:
                    print(f"workloads: {wl[0]} / {relay}: {r['error']}", file=sys.stderr)
                else:
                    print(f"pass {rnd + 1} {wl[0]:<18} c={wl[5]:<3} {relay:<8} {r['msg_s']:8.1f} msg/s "
                          f"p50 {r['p50']:7.1f} p99 {r['p99']:7.1f} ms  cpu/1000 {r['cpu_per_1000']:5.2f} s  "
                          f"rss {r['rss_mib']:7.1f} MiB  failed {r['failed']}"
                          + (f"  PROBLEM: {'; '.join(r['problems'])}" if r["problems"] else ""),
                          flush=True)
    text, problems = report(args, results, started, time.monotonic() - t_start, load0, loadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Submission workloads: Sluice beside Postfix\n\n" + text)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({f"{k[0]}/{k[1]}": v for k, v in results.items()},
                                                  indent=1))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
