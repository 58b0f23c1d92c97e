#!/usr/bin/env python3
"""Lints the Grafana dashboards the charts ship against our conventions.

    scripts/monitoring/lint-dashboards.py DASHBOARD.json...

Per dashboard: uid and title set, a `datasource` variable (type datasource, query
prometheus) and a `namespace` variable, no datasource uid other than `${datasource}`
anywhere (no hard-coded datasource), every `$variable` used is defined. Per panel (rows
aside): unique id, the `${datasource}` datasource, fieldConfig.defaults.unit, at least one
target, each with an expr that parses as PromQL (promql-parser) and in which every series
selector carries `namespace=~"$namespace"`. Every metric name is one the chart rule files
record or one the services export (scripts/lib/promql.py: a typo check; the rule files'
own exprs are held to the same list).

What Grafana's schema says (every key known, a complete gridPos, schemaVersion) holds by
construction: gen-dashboards.py builds the files with grafana-foundation-sdk's models and
`gen-dashboards.py --check` keeps the committed files equal to its output.
"""

import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))
import promql  # noqa: E402
from promql_parser import MatchOp  # noqa: E402

BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}


def walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
        yield path, node
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def lint_expr(ref: str, expr: str, known: set[str], variables) -> list[str]:
    try:
        selectors = promql.selectors(expr)
    except ValueError as e:
        return [f"{ref}: not PromQL ({e}): {expr}"]
    errs = [f'{ref}: {s.name or s} is not selected with namespace=~"$namespace"' for s in selectors
            if not promql.has_matcher(s, "namespace", MatchOp.Re, "$namespace")]
    errs += [f"{ref}: unknown metric {m!r} (neither in the rule files nor exported)"
             for m in sorted({s.name for s in selectors if s.name} - known)]
    errs += [f"{ref}: undefined variable ${var}" for var in re.findall(r"\$\{?(\w+)", expr)
             if var not in variables and var not in BUILTIN_VARS]
    return errs


def lint(d: dict, known: set[str]) -> tuple[list[str], int]:
    errs = [f"no {key}" for key in ("uid", "title") if not d.get(key)]
    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errs.append("no `datasource` variable of type datasource with query prometheus")
    if "namespace" not in variables:
        errs.append("no `namespace` variable")
    for where, node in walk(d):
        if where.endswith(".datasource") and isinstance(node, dict) and "uid" in node:
            if node["uid"] not in ("${datasource}", "-- Grafana --"):
                errs.append(f"{where}: hard-coded datasource uid {node['uid']!r}")
    ids, queries = set(), 0
    panels = d.get("panels", []) + [q for p in d.get("panels", []) for q in p.get("panels", [])]
    for p in panels:
        name = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errs.append(f"{name}: duplicate id")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            errs.append(f"{name}: datasource is not ${{datasource}}: {p.get('datasource')}")
        if not ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            errs.append(f"{name}: no fieldConfig.defaults.unit")
        if not p.get("targets"):
            errs.append(f"{name}: no targets")
        for t in p.get("targets") or []:
            ref = f"{name} target {t.get('refId')}"
            if not t.get("expr"):
                errs.append(f"{ref}: no expr")
                continue
            queries += 1
            errs += lint_expr(ref, t["expr"], known, variables)
    return errs, queries


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.split("\n\n")[1])
        return 2
    known, failures = promql.known_metrics()
    for e in failures:
        print(f"  FAIL {e}")
    if not failures:
        files = ", ".join(str(f.relative_to(promql.ROOT)) for f in promql.RULE_FILES)
        print(f"  ok   rule files ({files}): every metric known")
    for path in map(pathlib.Path, sys.argv[1:]):
        d = json.loads(path.read_text())
        errs, queries = lint(d, known)
        for e in errs:
            print(f"  FAIL {path.name}: {e}")
        failures += errs
        if not errs:
            n = sum(p.get("type") != "row" for p in d["panels"])
            print(f"  ok   {path.name}: {n} panels, {queries} queries: ${{datasource}}, units,"
                  f' namespace=~"$namespace" on every selector, known metrics, valid PromQL')
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
