#!/usr/bin/python3
"""Checks that includes between src/ folders point down the level table in
scripts/layers.txt. An include into a higher level, or sideways into another
folder of the same level, fails the check unless layers.txt lists it as a
known exception (those are debts to pay off, and the list may only shrink:
an exception that no longer occurs is reported so it gets deleted).
Also prints the folder-level include circles. Exit 0 when clean, 1 otherwise."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"', re.M)


def read_table(path):
    levels, allowed = {}, set()
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            word, _, rest = line.partition(" ")
            if word == "level":
                num, *folders = rest.split()
                for d in folders:
                    levels[d] = int(num)
            elif word == "allow":
                allowed.add(rest.strip())
            else:
                sys.exit(f"{path}:{n}: expected 'level N FOLDER...' or 'allow FILE -> FOLDER'")
    return levels, allowed


def includes():
    """(file relative to src/, its folder, included folder) for every include."""
    src = os.path.join(ROOT, "src")
    for dirpath, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src)
            folder = rel.split("/", 1)[0] if "/" in rel else "main"
            with open(path, errors="replace") as f:
                for to in INCLUDE.findall(f.read()):
                    if to != folder:
                        yield rel, folder, to


def circles(edges):
    """Folder cycles, each as a list of folders (one per strongly connected set)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    table = os.path.join(ROOT, "scripts", "layers.txt")
    levels, allowed = read_table(table)
    edges, wrong, seen_allowed = {}, [], set()
    for rel, frm, to in includes():
        edges.setdefault(frm, set()).add(to)
        if frm not in levels or to not in levels:
            wrong.append(f"{rel} -> {to}: folder missing from scripts/layers.txt")
            continue
        if levels[to] < levels[frm]:
            continue
        key = f"{rel} -> {to}"
        if key in allowed:
            seen_allowed.add(key)
        else:
            way = "sideways" if levels[to] == levels[frm] else "up"
            wrong.append(f"{key}: {way} (level {levels[frm]} includes level {levels[to]})")
    stale = sorted(allowed - seen_allowed)
    cyc = circles(edges)
    print(f"layers: {len(seen_allowed)} known exceptions, {len(wrong)} new wrong-way includes, "
          f"{len(cyc)} folder circles" + (": " + "; ".join(" <-> ".join(c) for c in cyc) if cyc else ""))
    for w in wrong:
        print("  wrong way:", w)
    for s in stale:
        print("  exception no longer needed, delete it from scripts/layers.txt:", s)
    return 1 if wrong or stale else 0


if __name__ == "__main__":
    sys.exit(main())
