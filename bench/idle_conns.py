#!/usr/bin/python3
"""Memory per idle connection: opens COUNT SMTP connections to the relay,
spread over several loopback source addresses (127.0.0.2, 127.0.0.3, ...) so
that per-address limits are not the subject, waits for every 220 greeting,
and reads the relay's resident memory before, with all connections open, and
after closing them. Prints one JSON object."""
import argparse
import asyncio
import json
import resource
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def settled_rss(pid, rounds=10, pause=0.2):
    """RSS once two readings in a row agree (bounded), so that work still in
    flight in the relay does not blur the figure."""
    prev = rss_kib(pid)
    for _ in range(rounds):
        time.sleep(pause)
        cur = rss_kib(pid)
        if cur == prev:
            return cur
        prev = cur
    return prev


async def open_all(args):
    conns, errors = [], []
    sem = asyncio.Semaphore(args.in_flight)

    async def one(i):
        src = f"127.0.0.{2 + i % args.sources}"
        async with sem:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(args.host, args.port, local_addr=(src, 0)), 30)
                line = await asyncio.wait_for(r.readline(), 30)
                if not line.startswith(b"220"):
                    errors.append(f"{src}: greeting {line[:80]!r}")
                    w.close()
                    return
                conns.append((r, w))
            except (OSError, asyncio.TimeoutError) as e:
                errors.append(f"{src}: {type(e).__name__}: {e}")

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(args.count))), args.timeout)
    return conns, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="relay process to measure")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--sources", type=int, default=10, help="127.0.0.2 .. 127.0.0.(1+N)")
    ap.add_argument("--in-flight", type=int, default=200, help="connects outstanding at once")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()

    need = args.count + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard > 0 else need, hard))

    async def body():
        before = settled_rss(args.pid)
        t0 = time.monotonic()
        conns, errors = await open_all(args)
        open_s = time.monotonic() - t0
        with_open = settled_rss(args.pid)
        for _, w in conns:
            w.close()
        await asyncio.sleep(0.5)
        return before, with_open, len(conns), errors, open_s

    try:
        before, with_open, opened, errors, open_s = asyncio.run(body())
    except asyncio.TimeoutError:
        print(json.dumps({"error": f"opening exceeded {args.timeout}s"}))
        return 2
    after = settled_rss(args.pid)
    out = {
        "requested": args.count, "opened": opened, "errors": errors[:10],
        "error_count": len(errors), "open_seconds": open_s,
        "rss_before_kib": before, "rss_open_kib": with_open, "rss_after_close_kib": after,
        "kib_per_connection": (with_open - before) / opened if opened else float("nan"),
    }
    print(json.dumps(out))
    return 0 if opened == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
