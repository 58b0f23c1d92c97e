#!/usr/bin/env python3
"""Writes the values table of each chart's README from its commented values.yaml.

Usage: values-table.py [--check] CHART_DIR...

A key is documented by a `# -- text` comment right above it (further `#` lines continue
the text). The table lands between `<!-- values:start -->` and `<!-- values:end -->` in
CHART_DIR/README.md. With --check nothing is written; the exit code is 1 when a README is
out of date, so the docs cannot drift from values.yaml.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:'\"-][^:]*):(?:\s|$)")
DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
MORE = re.compile(r"^ *# ?(?P<text>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted.path, description) for each key with a `# --` comment, in file order."""
    rows, stack, doc = [], [], None  # stack: (indent, key)
    for line in text.splitlines():
        if m := DOC.match(line):
            doc = [m["text"].strip()]
            continue
        if doc is not None and (m := MORE.match(line)):
            doc.append(m["text"].strip())
            continue
        if m := KEY.match(line):
            indent = len(m["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m["key"].strip()))
            if doc is not None:
                rows.append((".".join(k for _, k in stack), " ".join(doc)))
        doc = None
    return rows


def lookup(values: dict, path: str):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def type_name(value) -> str:
    return {bool: "bool", int: "int", float: "number", str: "string",
            list: "list", dict: "object"}.get(type(value), "null")


def table(chart: Path) -> str:
    text = (chart / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, doc in documented_keys(text):
        value = lookup(values, path)
        default = json.dumps(value, separators=(",", ":")).replace("|", r"\|")
        doc = doc.replace("|", r"\|")
        lines.append(f"| `{path}` | {type_name(value)} | `{default}` | {doc} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = 0
    for arg in (a for a in argv if a != "--check"):
        chart = Path(arg)
        readme = chart / "README.md"
        old = readme.read_text(encoding="utf-8")
        if START not in old or END not in old:
            print(f"{readme}: markers {START} / {END} missing")
            stale += 1
            continue
        head, rest = old.split(START, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{START}\n{table(chart)}\n{END}{tail}"
        if new == old:
            continue
        if check:
            print(f"{readme}: values table is out of date; run scripts/charts/values-table.py {chart}")
            stale += 1
        else:
            readme.write_text(new, encoding="utf-8")
            print(f"{readme}: values table updated")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
