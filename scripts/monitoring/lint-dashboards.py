#!/usr/bin/env python3
"""Lints the Grafana dashboards the charts ship.

    scripts/monitoring/lint-dashboards.py [--promtool PATH] DASHBOARD.json...

Per dashboard: uid and title set, schemaVersion >= 39, a `datasource` variable (type
datasource, query prometheus) and a `namespace` variable, no datasource uid other than
`${datasource}` anywhere (no hard-coded datasource), every `$variable` used is defined.
Per panel (rows aside): unique id, a complete gridPos, the `${datasource}` datasource,
fieldConfig.defaults.unit, at least one target, each with an expr in which every series
selector carries `namespace=~"$namespace"`. Per expr: every metric name is one the chart
rule files record or one the services export (EXPORTED below: a typo check; the rule
files' own exprs are held to the same list), and
the expr parses as PromQL (promtool check rules, with `$namespace` -> `.*` and
`$__rate_interval` -> `5m`, as the live check evaluates them).

Grafana's own dashboard schema is not available offline; this lint checks what the
dashboards rely on instead.
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULE_FILES = sorted(ROOT.glob("charts/*/files/*.yaml"))
# What the services export (crates/*/src/metrics.rs); histograms with their series suffixes.
EXPORTED = {
    "up",
    "http_requests_total", "http_request_duration_seconds",
    "process_start_time_seconds", "process_cpu_seconds_total", "process_resident_memory_bytes",
    "process_open_fds", "process_max_fds", "process_virtual_memory_bytes",
    "invoice_app_invoices", "invoice_app_pay_run_duration_seconds", "invoice_app_charge_attempts_total",
    "invoice_app_pay_runs", "invoice_app_pay_run_invoices", "invoice_app_charge_calls_unanswered_total",
    "invoice_app_recent_charge_attempts", "invoice_app_recent_charge_attempts_unanswered",
    "invoice_app_database_up", "invoice_app_invoices_attention", "invoice_app_invoices_lease_expired",
    "invoice_app_pay_run_oldest_running_seconds", "invoice_app_oldest_unsettled_seconds",
    "invoice_app_last_completed_pay_run_timestamp_seconds",
    "payment_provider_charges_total", "payment_provider_database_up",
}
HISTOGRAMS = {"http_request_duration_seconds", "invoice_app_pay_run_duration_seconds"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset", "inf", "nan", "atan2"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (a tokenizer good enough for our queries)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # string literals
    e = re.sub(r"\{[^}]*\}", "{}", e)                           # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                            # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    names = set()
    for m in re.finditer(IDENT, e):
        name, rest = m.group(0), e[m.end():]
        before = e[:m.start()]
        if re.match(r"\s*\(", rest) or name.lower() in KEYWORDS:
            continue                                            # function or keyword
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue                                            # 1e3, 0.5 and the like
        names.add(name)
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, matchers) of each series selector; bare names give empty matchers."""
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    out = [(m.group(1), m.group(2)) for m in re.finditer(rf"({IDENT})\s*\{{([^}}]*)\}}", e)]
    braced = {m for m, _ in out}
    out += [(n, "") for n in metric_names(expr) if n not in braced]
    return out


def known_metrics() -> tuple[set[str], list[str]]:
    """What the services export plus what the rule files record; and the rule files' own
    uses of unknown names (a typo in a rule is as silent as one in a panel)."""
    known = set(EXPORTED)
    for h in HISTOGRAMS:
        known |= {f"{h}_bucket", f"{h}_count", f"{h}_sum"}
    rules = []
    for f in RULE_FILES:
        for group in (yaml.safe_load(f.read_text()) or {}).get("groups", []):
            for rule in group["rules"]:
                if "record" in rule:
                    known.add(rule["record"])
                rules.append((f, rule))
    errs = [f"{f.relative_to(ROOT)}: {rule.get('alert') or rule.get('record')}: unknown metric {m!r}"
            for f, rule in rules for m in sorted(metric_names(rule["expr"]) - known)]
    return known, errs


def walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
        yield path, node
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def lint(path: pathlib.Path, known: set[str], exprs: list[str]) -> list[str]:
    errs = []
    d = json.loads(path.read_text())
    for key in ("uid", "title"):
        if not d.get(key):
            errs.append(f"no {key}")
    if int(d.get("schemaVersion") or 0) < 39:
        errs.append(f"schemaVersion {d.get('schemaVersion')} < 39")
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
    ids = set()
    panels = [p for p in d.get("panels", [])]
    panels += [q for p in d.get("panels", []) for q in p.get("panels", [])]  # collapsed rows
    for p in panels:
        name = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errs.append(f"{name}: duplicate id")
        ids.add(p.get("id"))
        grid = p.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            errs.append(f"{name}: gridPos incomplete: {grid}")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            errs.append(f"{name}: datasource is not ${{datasource}}: {p.get('datasource')}")
        if not ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            errs.append(f"{name}: no fieldConfig.defaults.unit")
        targets = p.get("targets") or []
        if not targets:
            errs.append(f"{name}: no targets")
        for t in targets:
            expr = t.get("expr") or ""
            ref = f"{name} target {t.get('refId')}"
            if not expr:
                errs.append(f"{ref}: no expr")
                continue
            if t.get("datasource") and t["datasource"].get("uid") != "${datasource}":
                errs.append(f"{ref}: datasource is not ${{datasource}}")
            exprs.append(expr)
            for metric, matchers in selectors(expr):
                if 'namespace=~"$namespace"' not in matchers.replace(" ", ""):
                    errs.append(f'{ref}: {metric} is not selected with namespace=~"$namespace"')
            for metric in sorted(metric_names(expr) - known):
                errs.append(f"{ref}: unknown metric {metric!r} (neither in the rule files nor exported)")
            for var in re.findall(r"\$\{?(\w+)", expr):
                if var not in variables and var not in BUILTIN_VARS:
                    errs.append(f"{ref}: undefined variable ${var}")
    return errs


def promql_errors(exprs: list[str], promtool: str) -> list[str]:
    """promtool parses each expr as a recording rule; one file per expr names the culprit."""
    errs = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, expr in enumerate(exprs):
            concrete = expr.replace("$namespace", ".*").replace("$__rate_interval", "5m")
            f = pathlib.Path(tmp, f"expr{i}.yaml")
            f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
                {"record": "dashboard:expr", "expr": concrete}]}]}))
            files.append(f)
        res = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True, text=True)
        if res.returncode != 0:
            for i, f in enumerate(files):
                one = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
                if one.returncode != 0:
                    errs.append(f"not PromQL: {exprs[i]}\n      {(one.stderr or one.stdout).strip().splitlines()[-1]}")
    return errs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dashboards", nargs="+", type=pathlib.Path)
    ap.add_argument("--promtool", default=shutil.which("promtool"))
    args = ap.parse_args()
    if not args.promtool:
        print("  FAIL promtool not found (Debian package prometheus): the exprs cannot be parsed")
        return 1
    (known, rule_errs), failed = known_metrics(), False
    for e in rule_errs:
        print(f"  FAIL {e}")
    if rule_errs:
        failed = True
    else:
        print(f"  ok   rule files ({', '.join(str(f.relative_to(ROOT)) for f in RULE_FILES)}): every metric known")
    for path in args.dashboards:
        exprs: list[str] = []
        errs = lint(path, known, exprs)
        errs += promql_errors(exprs, args.promtool)
        for e in errs:
            print(f"  FAIL {path.name}: {e}")
        if errs:
            failed = True
        else:
            d = json.loads(path.read_text())
            n = sum(p.get("type") != "row" for p in d["panels"])
            print(f"  ok   {path.name}: {n} panels, {len(exprs)} queries: ${{datasource}}, units,"
                  f' namespace=~"$namespace" on every selector, known metrics, valid PromQL')
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
