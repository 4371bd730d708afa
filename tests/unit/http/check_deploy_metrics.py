"""Checks the Grafana dashboard and the Prometheus alert rules against the
metrics the renderer actually emits. Usage: RENDERED DASHBOARD.json ALERTS.yml
Exits non-zero, naming the problem, when a file does not parse, lacks what
Grafana or Prometheus need, or uses a metric name that is not rendered."""
import json
import re
import sys

import yaml

NAME = re.compile(r"\bsluice_[a-zA-Z0-9_:]+")


def rendered_names(text):
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def walk_exprs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query") and isinstance(v, str):
                out.append(v)
            else:
                walk_exprs(v, out)
    elif isinstance(node, list):
        for v in node:
            walk_exprs(v, out)


def main():
    rendered, dash_path, alerts_path = sys.argv[1:4]
    with open(rendered) as f:
        names = rendered_names(f.read())
    problems = []

    with open(dash_path) as f:
        dash = json.load(f)
    for key in ("title", "panels", "schemaVersion", "uid"):
        if key not in dash:
            problems.append(f"dashboard: missing '{key}'")
    exprs = []
    walk_exprs(dash.get("panels", []), exprs)
    walk_exprs(dash.get("templating", {}), exprs)
    if len(exprs) < 8:
        problems.append(f"dashboard: only {len(exprs)} queries")
    for p in dash.get("panels", []):
        if "type" not in p or "gridPos" not in p:
            problems.append(f"dashboard panel {p.get('title')!r}: needs type and gridPos")

    with open(alerts_path) as f:
        alerts = yaml.safe_load(f)
    rules = [r for g in alerts.get("groups", []) for r in g.get("rules", [])]
    if len(rules) < 5:
        problems.append(f"alerts: only {len(rules)} rules")
    for r in rules:
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                problems.append(f"alert {r.get('alert')!r}: missing '{key}'")
        exprs.append(r.get("expr", ""))

    used = set()
    for e in exprs:
        used.update(NAME.findall(e))
    for n in sorted(used - names):
        problems.append(f"metric {n} is used but not rendered")
    if not used:
        problems.append("no sluice_ metric used at all")

    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(used)} metric names checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
