#!/usr/bin/python3
"""Measures the relays that bench/run.sh started (Sluice and a private Postfix,
both relaying to one smtp-sink) over a matrix of message sizes and client
concurrency, plus the disk's group-commit ceiling and Sluice's memory per idle
connection; prints the tables and writes them as Markdown. Only loopback
addresses are contacted; every wait is bounded."""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
FROM, TO, HELO = "from@bench.test", "to@bench.test", "bench.test"


# ---------------------------------------------------------------- /proc helpers

def read_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in clock ticks, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rfind(")") + 2:].split()
    return int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def process_tree(root):
    """root and all its descendants (Postfix: master and every daemon it runs)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo and len(out) < 10000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(root):
    """CPU time used by root and its live descendants, plus what root has
    collected from descendants that already exited (cutime/cstime): so a
    Postfix daemon that ends between two readings is still counted."""
    total = 0
    for p in process_tree(root):
        st = read_stat(p)
        if st:
            total += st[1] + (st[2] if p == root else 0)
    return total / CLK_TCK


def memory_kib(root):
    """(sum of RSS, sum of PSS) over the tree, in KiB. PSS splits shared pages
    (libraries, Postfix's shared text) between the processes that map them,
    so a sum over many processes does not count them many times."""
    rss = pss = 0
    for p in process_tree(root):
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE_KIB
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            pass
    return rss, pss


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pid):
    """Resets the kernel's peak-RSS mark (clear_refs value 5) so that VmHWM
    is the peak of one matrix cell. False where not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemorySampler(threading.Thread):
    """Samples the relay's memory every `period` seconds until stopped: the
    peak of the summed RSS and PSS over the process tree of `root`, or of
    several roots (a list: Postfix and OpenDKIM)."""

    def __init__(self, root, period=0.25):
        super().__init__(daemon=True)
        self.roots = root if isinstance(root, list) else [root]
        self.period = period
        self.peak_rss = self.peak_pss = 0
        self.stop_ev = threading.Event()

    def sample(self):
        rss = pss = 0
        for r in self.roots:
            a, b = memory_kib(r)
            rss, pss = rss + a, pss + b
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def run(self):
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.period)

    def finish(self):
        self.stop_ev.set()
        self.join(5)
        self.sample()


# ------------------------------------------------------------------ the sink

class Sink:
    """smtp-sink -c writes "sess=N quit=N mesg=N\\r" after every session end,
    QUIT and received "."; the last mesg= is the number of messages it has
    taken from both relays since it started."""
    MESG = re.compile(rb"mesg=(\d+)")

    def __init__(self, path):
        self.path = path

    def count(self):
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 96))
            m = self.MESG.findall(f.read())
        return int(m[-1]) if m else 0

    def wait_for(self, target, deadline, poll=0.005):
        """Time at which count() >= target, or None at the deadline."""
        while time.monotonic() < deadline:
            if self.count() >= target:
                return time.monotonic()
            time.sleep(poll)
        return None

    def settle(self, quiet=0.3, limit=5.0):
        """Waits until the counter has not moved for `quiet` seconds (bounded),
        so that late deliveries of one cell are not counted in the next."""
        end = time.monotonic() + limit
        last, since = self.count(), time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            c = self.count()
            if c != last:
                last, since = c, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last


# ------------------------------------------------------------------ relays

class Relay:
    def __init__(self, name, port, pid_source, log_path):
        self.name, self.port, self.pid_source, self.log_path = name, port, pid_source, log_path

    def pid(self):
        """Sluice: its pid; Postfix: the master's pid from its pid file."""
        src = self.pid_source
        if src.isdigit():
            return int(src)
        with open(src) as f:
            return int(f.read().split()[0])

    def alive(self):
        try:
            os.kill(self.pid(), 0)
            return True
        except (OSError, ValueError):
            return False

    def log_tail_problems(self, since_offset, limit=12):
        """Lines of the relay's log written since `since_offset` that look
        like trouble (warnings, errors, deferrals, panics)."""
        pat = re.compile(r'"level":"(warn|error)"|warning:|fatal:|panic:|error:|deferred|'
                         r'queue\.dead|queue\.held|status=(deferred|bounced)', re.I)
        out = []
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since_offset)
                for raw in f:
                    line = raw.decode(errors="replace").rstrip()
                    if pat.search(line):
                        out.append(line[:400])
                        if len(out) >= limit:
                            break
        except OSError:
            pass
        return out

    def last_lines(self, n=4):
        """The end of the log: how the relay stopped (a Sluice stop logs
        server.stopping with the signal; a crash leaves no such line)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 4096))
                return [x.decode(errors="replace")[:400] for x in f.read().splitlines()[-n:]]
        except OSError:
            return []

    # What counts as trouble in each relay's log, for the end-of-run summary.
    LOG_PATTERNS = {
        "sluice": {"warn": '"level":"warn"', "error": '"level":"error"',
                   "deferred": '"event":"queue.deferred"', "held": '"event":"queue.held"',
                   "dead": '"event":"queue.dead"', "delivered": '"event":"queue.delivered"'},
        "postfix": {"warning": "warning:", "error": "error:", "fatal": "fatal:", "panic": "panic:",
                    "deferred": "status=deferred", "bounced": "status=bounced",
                    "sent": "status=sent"},
    }

    def log_summary(self):
        """Counts of notable lines in the whole log, and the first few that
        are not routine (grep keeps this fast on a log of 100 MB)."""
        counts, first = {}, []
        for key, pat in self.LOG_PATTERNS.get(self.name, {}).items():
            r = subprocess.run(["grep", "-cF", pat, self.log_path], capture_output=True,
                               text=True, timeout=120)
            counts[key] = int(r.stdout.strip() or 0)
            if key not in ("delivered", "sent") and counts[key] and len(first) < 5:
                r = subprocess.run(["grep", "-m", "3", "-F", pat, self.log_path],
                                   capture_output=True, text=True, timeout=120)
                first += [x[:400] for x in r.stdout.splitlines()]
        return {"counts": ", ".join(f"{k} {v:,}" for k, v in counts.items()), "first": first}

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0


def smtp_source_cmd(port, size, count, conc):
    return ["smtp-source", "-c", "-l", str(size), "-m", str(count), "-s", str(conc),
            "-M", HELO, "-f", FROM, "-t", TO, f"127.0.0.1:{port}"]


def run_cell(relay, sink, size_kib, conc, count, lat_count, timeout):
    """One matrix cell: smtp-source for throughput, CPU and memory, then the
    latency client; both waits end when the sink has every message."""
    size = size_kib * 1024
    res = {"relay": relay.name, "size_kib": size_kib, "conc": conc, "count": count,
           "problems": []}
    if not relay.alive():
        res["problems"].append("relay process not running before the cell")
        res["log_lines"] = relay.last_lines()
        return res
    log0 = relay.log_size()
    base = sink.settle()
    root = relay.pid()
    hwm_ok = relay.name == "sluice" and reset_hwm(root)
    sampler = MemorySampler(root)
    cpu0 = cpu_seconds(root)
    sampler.start()
    cmd = smtp_source_cmd(relay.port, size, count, conc)
    res["command"] = " ".join(cmd)
    t0 = time.monotonic()
    deadline = t0 + timeout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        res["problems"].append(f"smtp-source still running after {timeout:.0f}s; killed")
    t_acc = time.monotonic()
    counter = re.findall(rb"(\d+)", out.replace(b"\r", b" ").replace(b"\n", b" "))
    res["source_rc"] = proc.returncode
    res["source_completed"] = int(counter[-1]) if counter else 0
    if proc.returncode != 0 or err.strip():
        res["problems"].append(f"smtp-source exit {proc.returncode}: "
                               + err.decode(errors="replace").strip()[:600])
    expected = count if proc.returncode == 0 else res["source_completed"]
    t_e2e = sink.wait_for(base + expected, max(deadline, t_acc + 30))
    cpu1 = cpu_seconds(root)
    sampler.finish()
    delivered = sink.settle() - base
    res.update({
        "accept_s": t_acc - t0, "accept_rate": count / (t_acc - t0) if proc.returncode == 0 else None,
        "e2e_s": (t_e2e - t0) if t_e2e else None,
        "e2e_rate": count / (t_e2e - t0) if (t_e2e and proc.returncode == 0) else None,
        "delivered": delivered, "cpu_s": cpu1 - cpu0,
        "cpu_per_1000": (cpu1 - cpu0) / count * 1000,
        "peak_rss_kib": max(sampler.peak_rss, vm_hwm_kib(root) if hwm_ok else 0),
        "peak_pss_kib": sampler.peak_pss,
    })
    if delivered < expected:
        res["problems"].append(f"sink received {delivered} of {expected} accepted messages "
                               f"within {max(deadline, t_acc + 30) - t0:.0f}s")
    elif delivered > count:
        res["problems"].append(f"sink received {delivered} messages for {count} sent "
                               f"(duplicates)")

    # Latency: a separate pass with the Python client at the same concurrency.
    n = max(lat_count, conc)
    base = sink.settle()
    lat_cmd = [PY, str(HERE / "latency.py"), "--port", str(relay.port), "--size", str(size),
               "--count", str(n), "--concurrency", str(conc), "--timeout", str(timeout)]
    try:
        p = subprocess.run(lat_cmd, capture_output=True, timeout=timeout + 30, text=True)
        lat = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as e:
        lat = {"error": f"latency client: {type(e).__name__}"}
    res["lat_count"] = n
    res["p50_ms"], res["p99_ms"] = lat.get("p50_ms"), lat.get("p99_ms")
    res["lat_rate"] = lat.get("msgs_per_s")
    if lat.get("error") or lat.get("errors"):
        res["problems"].append(f"latency client: {lat.get('error') or lat.get('errors')[:3]}")
    sent = lat.get("sent", 0)
    if sink.wait_for(base + sent, time.monotonic() + timeout) is None:
        res["problems"].append(f"latency pass: sink received {sink.count() - base} of {sent}")
    if not relay.alive():
        res["problems"].append("relay process stopped during the cell")
        res["log_lines"] = relay.log_tail_problems(log0) + relay.last_lines()
    if res["problems"]:
        res["log_lines"] = relay.log_tail_problems(log0)
    return res


def combine(runs):
    """Folds the passes of each cell into one row: medians of rates, latency
    and CPU, the min and max of the rates, the largest memory peak, and every
    problem with the pass it happened in."""
    groups = {}
    for r in runs:
        groups.setdefault((r["relay"], r["size_kib"], r["conc"]), []).append(r)
    cells = []
    for (relay, size, conc), rs in groups.items():
        c = {"relay": relay, "size_kib": size, "conc": conc, "passes": len(rs),
             "count": rs[0]["count"], "command": rs[0].get("command"), "problems": []}
        for key in ("accept_rate", "e2e_rate", "p50_ms", "p99_ms", "cpu_per_1000", "lat_rate"):
            v = [r[key] for r in rs if r.get(key) is not None]
            c[key] = statistics.median(v) if v else None
            c[key + "_min"], c[key + "_max"] = (min(v), max(v)) if v else (None, None)
        # Memory from the first pass: later passes start with what the
        # previous 100 KiB / concurrency 200 cells left (Postfix's idle
        # daemons, memory kept by Sluice's allocator), which would hide how
        # each load differs.
        for key in ("peak_rss_kib", "peak_pss_kib"):
            c[key] = next((r.get(key) for r in rs if r.get(key)), None)
            c[key + "_all_passes"] = max((r.get(key) or 0) for r in rs) or None
        for r in rs:
            c["problems"] += [f"pass {r['pass']}: {p}" for p in r["problems"]]
            if r.get("log_lines") and "log_lines" not in c:
                c["log_lines"] = r["log_lines"]
        cells.append(c)
    return cells


def sink_baseline(args, sink):
    """smtp-source straight into the sink, no relay: what the client and the
    sink alone can do on this machine, the roof over every relay figure."""
    if not args.sink_port:
        return None
    out = {}
    for conc in sorted({c for c in args.concs if c in (1, 50)} or {args.concs[0]}):
        size = 10 if 10 in args.sizes else args.sizes[0]
        base = sink.settle()
        t0 = time.monotonic()
        p = subprocess.run(smtp_source_cmd(args.sink_port, size * 1024, args.count, conc),
                           capture_output=True, timeout=args.cell_timeout)
        dt = time.monotonic() - t0
        got = sink.settle() - base
        out[f"{size} KiB, concurrency {conc}"] = (
            args.count / dt if p.returncode == 0 and got == args.count
            else f"failed: exit {p.returncode}, sink got {got}")
        print(f"== baseline smtp-source -> smtp-sink {size} KiB conc {conc}: "
              f"{out[f'{size} KiB, concurrency {conc}']}", flush=True)
    return out


# ------------------------------------------------------------------ machine

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except subprocess.TimeoutExpired:
        return ""


def machine_info(tmp, sluice_bin):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    fs = sh(f"findmnt -n -o SOURCE,FSTYPE,OPTIONS -T '{tmp}'") or sh(f"df -T '{tmp}' | tail -1")
    src = fs.split()[0] if fs else ""
    dev = os.path.basename(src)
    disk = ""
    if dev:
        parent = sh(f"lsblk -no PKNAME /dev/{dev} 2>/dev/null") or dev
        rot = sh(f"cat /sys/block/{parent}/queue/rotational 2>/dev/null")
        model = sh(f"cat /sys/block/{parent}/device/model 2>/dev/null")
        disk = f"{parent} ({'rotational' if rot == '1' else 'non-rotational' if rot == '0' else '?'}"
        disk += f", {model})" if model else ")"
    root = HERE.parent
    rev = sh(f"git -C '{root}' rev-parse --short HEAD")
    dirty = sh(f"git -C '{root}' status --porcelain -- src") != ""
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
        "tmp": str(tmp), "filesystem": fs, "disk": disk,
        "postfix": sh("postconf -d -h mail_version"),
        "sluice": f"{rev}{' (src modified)' if dirty else ''}, binary {sluice_bin}",
        "python": platform.python_version(),
        "load_start": loadavg(),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


# ------------------------------------------------------------------ report

def fmt(v, nd=0, unit=""):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}{unit}"


def ratio(a, b):
    """a / b, for Sluice / Postfix."""
    if not a or not b:
        return "—"
    return f"{(a / b):.2f}×"


def spread(cell, key):
    """Median, with the lowest and highest pass when there were several."""
    v, lo, hi = cell.get(key), cell.get(key + "_min"), cell.get(key + "_max")
    if v is None:
        return "—"
    if cell.get("passes", 1) > 1 and lo is not None and hi is not None and lo != hi:
        return f"{v:,.0f} ({lo:,.0f}–{hi:,.0f})"
    return f"{v:,.0f}"


def report(args, info, cells, fsync, idle, started, elapsed, baseline=None, logs=None):
    by = {(c["relay"], c["size_kib"], c["conc"]): c for c in cells}
    relays = args.relays
    both = "postfix" in relays and "sluice" in relays
    L = []
    L.append("# Sluice beside Postfix: latest results\n")
    L.append(f"- command: `{args.command_line}`")
    L.append(f"- date: {started} (took {elapsed / 60:.1f} min)")
    L.append(f"- machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']} RAM, "
             f"kernel {info['kernel']}")
    L.append(f"- temp dir: `{info['tmp']}` on {info['filesystem']}; disk {info['disk']}")
    L.append(f"- Postfix {info['postfix']}; Sluice {info['sluice']}; Python {info['python']}")
    L.append(f"- load average (1, 5, 15 min) at the start: {info['load_start']}; at the end: "
             f"{info.get('load_end', '?')} (this counts the benchmark's own processes too; well above "
             f"the number of CPUs means other work competed for the machine)")
    L.append(f"- matrix: sizes {args.sizes} KiB, concurrency {args.concs}, "
             f"{args.count} messages per smtp-source run, {args.lat_count} per latency run, "
             f"{args.repeat} passes (medians shown, lowest–highest pass in brackets)\n")

    L.append("## Throughput (messages/s; higher is better)\n")
    L.append("| size | conc | Postfix accept | Sluice accept | ratio | Postfix end-to-end | "
             "Sluice end-to-end | ratio |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in args.sizes:
        for c in args.concs:
            p, q = by.get(("postfix", s, c), {}), by.get(("sluice", s, c), {})
            L.append(f"| {s} KiB | {c} | {spread(p, 'accept_rate')} | {spread(q, 'accept_rate')} | "
                     f"{ratio(q.get('accept_rate'), p.get('accept_rate'))} | "
                     f"{spread(p, 'e2e_rate')} | {spread(q, 'e2e_rate')} | "
                     f"{ratio(q.get('e2e_rate'), p.get('e2e_rate'))} |")
    L.append("\n## Acceptance latency (ms, connect to 250 after the final dot; lower is better)\n")
    L.append("| size | conc | Postfix p50 | Postfix p99 | Sluice p50 | Sluice p99 | p50 ratio "
             "(Sluice/Postfix) | client msgs/s Postfix | client msgs/s Sluice |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in args.sizes:
        for c in args.concs:
            p, q = by.get(("postfix", s, c), {}), by.get(("sluice", s, c), {})
            L.append(f"| {s} KiB | {c} | {fmt(p.get('p50_ms'), 1)} | {fmt(p.get('p99_ms'), 1)} | "
                     f"{fmt(q.get('p50_ms'), 1)} | {fmt(q.get('p99_ms'), 1)} | "
                     f"{ratio(q.get('p50_ms'), p.get('p50_ms'))} | {fmt(p.get('lat_rate'))} | "
                     f"{fmt(q.get('lat_rate'))} |")
    L.append("\n## Cost (CPU seconds per 1000 messages, accept through delivery; peak memory "
             "in MiB, first pass)\n")
    L.append("| size | conc | Postfix CPU | Sluice CPU | ratio (Sluice/Postfix) | Postfix peak RSS | "
             "Postfix peak PSS | Sluice peak RSS | Sluice peak PSS |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    mib = (lambda v: fmt(v / 1024, 1) if v else "—")
    for s in args.sizes:
        for c in args.concs:
            p, q = by.get(("postfix", s, c), {}), by.get(("sluice", s, c), {})
            L.append(f"| {s} KiB | {c} | {fmt(p.get('cpu_per_1000'), 2)} | "
                     f"{fmt(q.get('cpu_per_1000'), 2)} | "
                     f"{ratio(q.get('cpu_per_1000'), p.get('cpu_per_1000'))} | "
                     f"{mib(p.get('peak_rss_kib'))} | {mib(p.get('peak_pss_kib'))} | "
                     f"{mib(q.get('peak_rss_kib'))} | {mib(q.get('peak_pss_kib'))} |")

    peak = {r: max((c.get("peak_rss_kib_all_passes") or 0 for c in cells if c["relay"] == r),
                   default=0) for r in relays}
    pss = {r: max((c.get("peak_pss_kib_all_passes") or 0 for c in cells if c["relay"] == r),
                  default=0) for r in relays}
    L.append("\nWhole run, highest of any cell and pass: "
             + "; ".join(f"{r} RSS {peak[r] / 1024:,.1f} MiB, PSS {pss[r] / 1024:,.1f} MiB"
                         for r in relays if peak[r]) + ".")

    if both:
        L.append("\n## Goal: Sluice ≥ 3× Postfix at concurrency 50, 10 KiB\n")
        p, q = by.get(("postfix", 10, 50)), by.get(("sluice", 10, 50))
        if p and q:
            for key, label in (("accept_rate", "acceptance"), ("e2e_rate", "end-to-end")):
                a, b = q.get(key), p.get(key)
                if a and b:
                    verdict = "met" if a / b >= 3 else "NOT met"
                    L.append(f"- {label}: Sluice {a:,.0f}/s vs Postfix {b:,.0f}/s = "
                             f"{a / b:.2f}× — {verdict}")
                else:
                    L.append(f"- {label}: no figure (see problems)")
        else:
            L.append("- the matrix of this run has no 10 KiB / concurrency 50 cell")

    if baseline:
        L.append("\n## Roof: smtp-source straight into smtp-sink, no relay (messages/s)\n")
        for k, v in baseline.items():
            L.append(f"- {k}: " + (f"{v:,.0f}" if isinstance(v, float) else v))

    L.append("\n## Group-commit ceiling of this disk (10 KiB records appended, fdatasync every N)\n")
    probes = [(k, v) for k, v in (fsync or {}).items() if isinstance(v, list)]
    if probes:
        L.append("| N | " + " | ".join(f"records/s {k}" for k, _ in probes) + " | "
                 + " | ".join(f"fdatasyncs/s {k}" for k, _ in probes) + " |")
        L.append("|---:|" + "---:|" * (2 * len(probes)))
        for i, r in enumerate(probes[0][1]):
            L.append(f"| {r['batch']} | "
                     + " | ".join(f"{v[i]['records_per_s']:,.0f}" for _, v in probes) + " | "
                     + " | ".join(f"{v[i]['fdatasyncs_per_s']:,.0f}" for _, v in probes) + " |")
    for k, v in (fsync or {}).items():
        if not isinstance(v, list):
            L.append(f"- {k}: not measured: {v}")

    L.append("\n## Sluice memory with idle connections\n")
    if idle and "opened" in idle:
        L.append(f"- measured on {idle.get('instance', 'Sluice')}")
        L.append(f"- {idle['opened']:,} of {idle['requested']:,} connections open (each greeted "
                 f"with 220) in {idle['open_seconds']:.1f}s from 127.0.0.2–127.0.0.{1 + args.idle_sources}")
        L.append(f"- Sluice RSS: {idle['rss_before_kib']:,} KiB before, {idle['rss_open_kib']:,} KiB "
                 f"with all open, {idle['rss_after_close_kib']:,} KiB after closing them")
        L.append(f"- **{idle['kib_per_connection']:.1f} KiB per idle connection**")
        if idle.get("error_count"):
            L.append(f"- {idle['error_count']} connections failed, first: {idle['errors'][:3]}")
    else:
        L.append(f"not measured: {idle or 'no Sluice in this run'}")

    L.append("\n## Relay logs over the whole run\n")
    for name, summary in (logs or {}).items():
        L.append(f"- {name}: {summary['counts']}")
        for line in summary["first"][:5]:
            L.append(f"  - `{line}`")

    problems = [c for c in cells if c.get("problems")]
    L.append("\n## Problems seen\n")
    for name, where in getattr(args, "stopped_at", {}).items():
        L.append(f"- **{name} stopped running** (found at {where}); its later cells were "
                 f"skipped, so their figures come from the passes before. How it stopped is "
                 f"in the last log lines below (a Sluice stopped by a signal logs "
                 f"`server.stopping` with the signal; a crash leaves no such line).")
    if not problems:
        L.append("None: every smtp-source run exited 0 and the sink received exactly the "
                 "messages sent, for both relays in every cell.")
    for c in problems:
        L.append(f"- **{c['relay']}**, {c['size_kib']} KiB, concurrency {c['conc']}: "
                 + "; ".join(c["problems"]))
        if c.get("command"):
            L.append(f"  - command: `{c['command']}`")
        for line in c.get("log_lines", [])[:8]:
            L.append(f"  - log: `{line}`")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ main

def int_list(s):
    return [int(x) for x in re.split(r"[,\s]+", s.strip()) if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sink-out", required=True)
    ap.add_argument("--sink-port", type=int, default=0)
    ap.add_argument("--relay", action="append", default=[],
                    help="NAME:PORT:PID-or-pidfile:LOGFILE")
    ap.add_argument("--sizes", type=int_list, default=[1, 10, 100])
    ap.add_argument("--concs", type=int_list, default=[1, 10, 50, 200])
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--lat-count", type=int, default=1000)
    ap.add_argument("--cell-timeout", type=float, default=120)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the matrix; medians reported")
    ap.add_argument("--fsync-bin")
    ap.add_argument("--fsync-seconds", type=float, default=2.0)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--idle-sources", type=int, default=10)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--sluice-bin", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json-out")
    ap.add_argument("--command-line", default="bench/run.sh")
    args = ap.parse_args()

    relays = []
    for spec in args.relay:
        name, port, pid_source, log = spec.split(":", 3)
        relays.append(Relay(name, int(port), pid_source, log))
    # "sluice-idle" is a second Sluice, untouched by the matrix, for the
    # idle-connection test: its memory is not what the matrix left behind.
    idle_relays = [r for r in relays if r.name == "sluice-idle"]
    relays = [r for r in relays if r.name != "sluice-idle"]
    args.relays = [r.name for r in relays]
    sink = Sink(args.sink_out)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t_start = time.monotonic()
    info = machine_info(args.tmp, args.sluice_bin)

    def fsync_probe(when):
        """The disk's ceiling; run before and after the matrix because a
        shared or virtual disk can change under the run."""
        if not args.fsync_bin:
            return None
        print(f"== group-commit ceiling, {when} (fdatasync every N records of 10 KiB)", flush=True)
        p = subprocess.run([args.fsync_bin, args.tmp, str(args.fsync_seconds)],
                           capture_output=True, text=True, timeout=120)
        out = json.loads(p.stdout) if p.returncode == 0 else p.stderr.strip()
        print(f"   {out}", flush=True)
        return out

    fsync = {"before the matrix": fsync_probe("before")}
    baseline = sink_baseline(args, sink)

    for r in relays:
        # Warm-up: Postfix starts its daemons on demand and Sluice opens its
        # upstream connections; neither start-up belongs in the first cell.
        if args.warmup > 0:
            base = sink.settle()
            subprocess.run(smtp_source_cmd(r.port, 1024, args.warmup, 10),
                           capture_output=True, timeout=120)
            if sink.wait_for(base + args.warmup, time.monotonic() + 60) is None:
                print(f"!! warm-up of {r.name}: sink received {sink.count() - base} of "
                      f"{args.warmup}", flush=True)

    runs, dead, stopped_at = [], set(), {}
    for rep in range(1, args.repeat + 1):
        for s in args.sizes:
            for c in args.concs:
                for r in relays:
                    if r.name in dead:
                        continue
                    print(f"== pass {rep}/{args.repeat}  {r.name:8s} {s:4d} KiB  concurrency {c:4d}"
                          f"  {args.count} messages", flush=True)
                    res = run_cell(r, sink, s, c, args.count, args.lat_count, args.cell_timeout)
                    res["pass"] = rep
                    runs.append(res)
                    if not r.alive():
                        dead.add(r.name)
                        stopped_at[r.name] = f"pass {rep}, {s} KiB, concurrency {c}"
                        print(f"!! {r.name} is not running any more; its remaining cells are "
                              f"skipped. Last log lines:", flush=True)
                        for line in r.last_lines():
                            print(f"!!   {line}", flush=True)
                    print(f"   accept {fmt(res.get('accept_rate'))}/s  end-to-end "
                          f"{fmt(res.get('e2e_rate'))}/s  p50 {fmt(res.get('p50_ms'), 1)} ms  "
                          f"p99 {fmt(res.get('p99_ms'), 1)} ms  CPU "
                          f"{fmt(res.get('cpu_per_1000'), 2)} s/1000  peak RSS "
                          f"{fmt((res.get('peak_rss_kib') or 0) / 1024, 1)} MiB", flush=True)
                    for pr in res["problems"]:
                        print(f"!! {pr}", flush=True)
                    for line in res.get("log_lines", [])[:5]:
                        print(f"!!   {line}", flush=True)
    cells = combine(runs)

    fsync["after the matrix"] = fsync_probe("after")

    idle = None
    sl = idle_relays or [r for r in relays if r.name == "sluice"]
    if sl and args.idle_conns > 0 and not sl[0].alive():
        idle = (f"{sl[0].name} was not running before the test; its log ends: "
                + " ".join(sl[0].last_lines(2)))
    elif sl and args.idle_conns > 0:
        print(f"== Sluice memory with {args.idle_conns} idle connections", flush=True)
        p = subprocess.run([PY, str(HERE / "idle_conns.py"), "--port", str(sl[0].port),
                            "--pid", str(sl[0].pid()), "--count", str(args.idle_conns),
                            "--sources", str(args.idle_sources)],
                           capture_output=True, text=True, timeout=300)
        try:
            idle = json.loads(p.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            idle = f"idle_conns.py exit {p.returncode}: {p.stderr.strip()[-400:]}"
        if isinstance(idle, dict):
            idle["instance"] = ("a second Sluice with the same config that took no mail before"
                                if sl[0].name == "sluice-idle"
                                else "the Sluice of the matrix, after the matrix")
        print(f"   {idle}", flush=True)
        if not sl[0].alive():
            idle = f"Sluice stopped during the idle-connection test: {idle}"

    info["load_end"] = loadavg()
    logs = {r.name: r.log_summary() for r in relays}
    args.stopped_at = stopped_at
    md = report(args, info, cells, fsync, idle, started, time.monotonic() - t_start, baseline,
                logs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"info": info, "cells": cells, "runs": runs, "fsync": fsync, "idle": idle,
             "baseline": baseline}, indent=1))
    print("\n" + md)
    print(f"results written to {args.out}")
    return 1 if any(c.get("problems") for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
