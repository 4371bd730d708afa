#!/usr/bin/python3
"""Acceptance latency client for the benchmarks: runs CONCURRENCY parallel SMTP
clients that each open a connection per message (as smtp-source does) and
times every transaction from connect() to the 250 reply to the final ".",
i.e. how long an application waits until the relay has taken the message.
Prints one JSON object with the percentiles; exits non-zero on any error."""
import argparse
import asyncio
import json
import statistics
import sys
import time

# Bounds so that a stuck relay cannot hang the benchmark (seconds).
REPLY_TIMEOUT = 60.0


def make_body(size, seq):
    """A header block plus `size` bytes of 76-column text lines, CRLF-ended and
    dot-safe (no line starts with '.')."""
    head = (f"From: <from@bench.test>\r\nTo: <to@bench.test>\r\n"
            f"Subject: latency {seq}\r\nMessage-ID: <lat{seq}.{time.time_ns()}@bench.test>\r\n\r\n")
    line = b"x" * 76 + b"\r\n"
    n, rest = divmod(size, len(line))
    body = line * n + (b"y" * max(rest - 2, 0) + b"\r\n" if rest >= 2 else b"")
    return head.encode() + body


async def read_reply(reader):
    """Reads one (possibly multi-line) SMTP reply; returns its code."""
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if len(line) < 4:
            raise ConnectionError(f"short reply {line!r}")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def expect(reader, code):
    got, line = await read_reply(reader)
    if got != code:
        raise ConnectionError(f"expected {code}, got {line.decode(errors='replace').strip()}")


async def one(host, port, body):
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REPLY_TIMEOUT)
    try:
        await expect(reader, 220)
        writer.write(b"HELO bench.test\r\n")
        await expect(reader, 250)
        writer.write(b"MAIL FROM:<from@bench.test>\r\n")
        await expect(reader, 250)
        writer.write(b"RCPT TO:<to@bench.test>\r\n")
        await expect(reader, 250)
        writer.write(b"DATA\r\n")
        await expect(reader, 354)
        writer.write(body + b".\r\n")
        await expect(reader, 250)
        elapsed = time.perf_counter() - t0
        writer.write(b"QUIT\r\n")
        try:
            await asyncio.wait_for(reader.readline(), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        return elapsed
    finally:
        writer.close()


async def run(args):
    lat, errors = [], []
    next_seq = 0
    bodies = [make_body(args.size, i) for i in range(min(args.count, 64))]

    async def worker():
        nonlocal next_seq
        while next_seq < args.count and len(errors) < 10:
            seq = next_seq
            next_seq += 1
            try:
                lat.append(await one(args.host, args.port, bodies[seq % len(bodies)]))
            except (OSError, ConnectionError, ValueError, asyncio.TimeoutError) as e:
                errors.append(f"message {seq}: {type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(args.concurrency))),
                           args.timeout)
    return lat, errors, time.perf_counter() - t0


def percentile(sorted_v, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_v:
        return float("nan")
    k = max(0, min(len(sorted_v) - 1, int(round(p / 100.0 * len(sorted_v) + 0.5)) - 1))
    return sorted_v[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=10240, help="payload bytes")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=300, help="whole run, seconds")
    args = ap.parse_args()
    try:
        lat, errors, wall = asyncio.run(run(args))
    except asyncio.TimeoutError:
        print(json.dumps({"error": f"run exceeded {args.timeout}s"}))
        return 2
    lat.sort()
    out = {
        "sent": len(lat), "errors": errors, "wall_s": wall,
        "msgs_per_s": len(lat) / wall if wall > 0 else 0.0,
        "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
    }
    print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
