#!/usr/bin/python3
"""Renders deploy/helm/sluice the way `helm template` does, for the subset of
Go templates the chart keeps to (Helm is not packaged for Debian 12):
actions {{ }} with {{- -}} trimming; if / else / end; range $k, $v := MAP;
.Values, .Release.Name, .Chart.*, .Files.Get; "strings", numbers, $vars;
pipelines through quote, b64enc, indent N, nindent N, toYaml, not, default.
Anything else is an error, so the chart cannot drift outside what is checked.

usage: helm_render.py CHART [--set key.path=value ...] [--name RELEASE]"""
import base64
import json
import re
import shlex
import sys
from pathlib import Path

import yaml

ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


class TemplateError(Exception):
    pass


def tokens(text):
    """Text and action tokens with Go's trim markers applied."""
    out, pos = [], 0
    for m in ACTION.finditer(text):
        lit = text[pos:m.start()]
        if m.group(1):
            lit = lit.rstrip()
        out.append(("text", lit))
        out.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
    out.append(("text", text[pos:]))
    return out


def parse(toks, i=0, stop=("end",)):
    """A list of nodes up to a closing keyword; returns (nodes, index, keyword)."""
    nodes = []
    while i < len(toks):
        kind, v = toks[i]
        i += 1
        if kind == "text":
            nodes.append(("text", v))
            continue
        word = v.split(None, 1)[0] if v else ""
        if word in ("end", "else") and word in stop:
            return nodes, i, word
        if word == "if":
            body, i, kw = parse(toks, i, ("end", "else"))
            other = []
            if kw == "else":
                other, i, kw = parse(toks, i, ("end",))
            if kw != "end":
                raise TemplateError(f"{{{{ {v} }}}} without {{{{ end }}}}")
            nodes.append(("if", v[2:].strip(), body, other))
        elif word == "range":
            m = re.fullmatch(r"range\s+\$(\w+)\s*,\s*\$(\w+)\s*:=\s*(.+)", v)
            if not m:
                raise TemplateError(f"unsupported range: {v}")
            body, i, kw = parse(toks, i, ("end",))
            if kw != "end":
                raise TemplateError(f"{{{{ {v} }}}} without {{{{ end }}}}")
            nodes.append(("range", m.group(1), m.group(2), m.group(3), body))
        elif word in ("end", "else", "define", "template", "with", "block"):
            raise TemplateError(f"unsupported or unbalanced action: {v}")
        else:
            nodes.append(("expr", v))
    return nodes, i, None


def lookup(ctx, path):
    cur = ctx
    for part in path.split(".")[1:]:
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def truthy(v):
    return bool(v) if v is not None else False


def to_yaml(v):
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


FUNCS = {
    "quote": lambda v: json.dumps("" if v is None else str(v)),
    "b64enc": lambda v: base64.b64encode(str(v or "").encode()).decode(),
    "indent": lambda n, v: "\n".join(" " * int(n) + l if l else l for l in str(v).split("\n")),
    "nindent": lambda n, v: "\n" + FUNCS["indent"](n, v),
    "toYaml": to_yaml,
    "not": lambda v: not truthy(v),
    "default": lambda d, v: v if truthy(v) else d,
}


def term(word, ctx, env):
    if word.startswith('"'):
        return json.loads(word)
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    if word.startswith("$"):
        if word[1:] not in env:
            raise TemplateError(f"unknown variable {word}")
        return env[word[1:]]
    if word.startswith("."):
        return lookup(ctx, word)
    raise TemplateError(f"unsupported term {word!r}")


def evaluate(expr, ctx, env, files):
    value, first = None, True
    for stage in expr.split("|"):
        words = shlex.split(stage.strip(), posix=False)
        if not words:
            raise TemplateError(f"empty pipeline stage in {expr!r}")
        if words[0] == ".Files.Get":
            value = files(json.loads(words[1]))
        elif words[0] in FUNCS:
            args = [term(w, ctx, env) for w in words[1:]]
            if not first:
                args.append(value)
            value = FUNCS[words[0]](*args)
        elif first and len(words) == 1:
            value = term(words[0], ctx, env)
        else:
            raise TemplateError(f"unsupported function {words[0]!r} in {expr!r}")
        first = False
    return value


def execute(nodes, ctx, env, files):
    out = []
    for n in nodes:
        if n[0] == "text":
            out.append(n[1])
        elif n[0] == "expr":
            v = evaluate(n[1], ctx, env, files)
            out.append("" if v is None else str(v))
        elif n[0] == "if":
            branch = n[2] if truthy(evaluate(n[1], ctx, env, files)) else n[3]
            out.append(execute(branch, ctx, env, files))
        elif n[0] == "range":
            m = evaluate(n[3], ctx, env, files) or {}
            if not isinstance(m, dict):
                raise TemplateError(f"range over a non-map: {n[3]}")
            for k in sorted(m):
                out.append(execute(n[4], ctx, {**env, n[1]: k, n[2]: m[k]}, files))
    return "".join(out)


def set_value(values, assignment):
    key, _, raw = assignment.partition("=")
    parts = key.split(".")
    cur = values
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = yaml.safe_load(raw) if raw not in ("",) else ""


def render(chart, sets=(), release="sluice"):
    """Returns {template name: rendered text}."""
    chart = Path(chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    for s in sets:
        set_value(values, s)
    ctx = {"Values": values, "Release": {"Name": release, "Namespace": "default"},
           "Chart": {"Name": meta["name"], "Version": meta["version"],
                     "AppVersion": meta.get("appVersion", "")}}
    files = lambda p: (chart / p).read_text()
    out = {}
    for t in sorted((chart / "templates").glob("*.yaml")):
        nodes, i, kw = parse(tokens(t.read_text()))
        if kw is not None:
            raise TemplateError(f"{t.name}: unbalanced {{{{ {kw} }}}}")
        out[t.name] = execute(nodes, ctx, {}, files)
    return out


def main(argv):
    args, sets, release = [], [], "sluice"
    it = iter(argv)
    for a in it:
        if a == "--set":
            sets.append(next(it))
        elif a == "--name":
            release = next(it)
        else:
            args.append(a)
    for name, text in render(args[0], sets, release).items():
        if text.strip():
            print(f"---\n# Source: sluice/templates/{name}\n{text.strip()}")


if __name__ == "__main__":
    main(sys.argv[1:])
