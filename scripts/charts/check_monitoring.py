#!/usr/bin/env python3
"""The monitoring objects a chart renders are its rule files and dashboards, unchanged.

    check_monitoring.py CHART_DIR RENDERED VALUES [VALUES...]

RENDERED is `helm template` of CHART_DIR with the VALUES files (later ones win, on top of
the chart's values.yaml). With `prometheusRule.enabled`, the PrometheusRule's spec.groups
must equal files/alerts.yaml + files/slo-rules.yaml minus `excludeRules` (a group left
empty is dropped), each `runbook_url` moved to `runbookBaseURL` when set, and carry the
extra labels; without it, no PrometheusRule. The same for `grafanaDashboard` and the
ConfigMap holding files/dashboards/*.json byte for byte, labelled for Grafana's sidecar.
A rendered ServiceMonitor must set `jobLabel: app.kubernetes.io/name`, whose value on the
Service is the job the rules and dashboards select (`job="<chart>"`).
Kubernetes' schema does not know the PrometheusRule kind, so this check, and promtool run
by check.sh on the spec it writes (--promtool-out), stand in for kubernetes-validate.
"""

import argparse
import copy
import json
import pathlib
import sys

import yaml

UPSTREAM = "https://github.com/invoice-platform/invoice-platform/blob/main/docs/runbooks"
RULE_FILES = ("files/alerts.yaml", "files/slo-rules.yaml")


def load_values(chart: pathlib.Path, files: list[str]) -> dict:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    for f in files:
        for key, val in (yaml.safe_load(pathlib.Path(f).read_text()) or {}).items():
            if isinstance(val, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **val}
            else:
                values[key] = val
    return values


def expected_groups(chart: pathlib.Path, pr: dict) -> list[dict]:
    exclude = set(pr.get("excludeRules") or [])
    base = (pr.get("runbookBaseURL") or "").rstrip("/")
    groups = []
    for name in RULE_FILES:
        for group in yaml.safe_load((chart / name).read_text())["groups"]:
            rules = []
            for rule in group["rules"]:
                if (rule.get("alert") or rule.get("record")) in exclude:
                    continue
                rule = copy.deepcopy(rule)
                url = (rule.get("annotations") or {}).get("runbook_url")
                if base and url:
                    rule["annotations"]["runbook_url"] = base + url.removeprefix(UPSTREAM)
                rules.append(rule)
            if rules:
                groups.append({**group, "rules": rules})
    return groups


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("chart", type=pathlib.Path)
    ap.add_argument("rendered", type=pathlib.Path)
    ap.add_argument("values", nargs="*")
    ap.add_argument("--promtool-out", type=pathlib.Path,
                    help="write the rendered spec.groups here as a Prometheus rule file")
    args = ap.parse_args()
    chart, where = args.chart, f"{args.chart.name} ({args.rendered.stem})"
    values = load_values(chart, args.values)
    docs = [d for d in yaml.safe_load_all(args.rendered.read_text()) if d]
    failures = []

    rules_docs = [d for d in docs if d["kind"] == "PrometheusRule"]
    pr = values["prometheusRule"]
    if not pr["enabled"]:
        if rules_docs:
            failures.append("a PrometheusRule rendered with prometheusRule.enabled false")
    elif len(rules_docs) != 1:
        failures.append(f"{len(rules_docs)} PrometheusRules rendered, expected 1")
    else:
        doc = rules_docs[0]
        want, got = expected_groups(chart, pr), doc["spec"]["groups"]
        if got != want:
            flat = lambda gs: [(g["name"], r) for g in gs for r in g["rules"]]
            names = lambda gs: [r.get("alert") or r.get("record") for _, r in flat(gs)]
            if names(got) != names(want):
                failures.append("spec.groups differ from the rule files minus excludeRules: "
                                f"rendered {names(got)}, expected {names(want)}")
            else:
                first = next((a, b) for a, b in zip(flat(got), flat(want)) if a != b)
                failures.append(f"rule {first[0][1].get('alert') or first[0][1].get('record')} "
                                f"rendered as {first[0]}, expected {first[1]}")
        for name in pr.get("excludeRules") or []:
            if any((r.get("alert") or r.get("record")) == name for g in got for r in g["rules"]):
                failures.append(f"{name} is in excludeRules but rendered")
        labels = doc["metadata"].get("labels") or {}
        for k, v in (pr.get("labels") or {}).items():
            if labels.get(k) != v:
                failures.append(f"PrometheusRule lacks the label {k}: {v}")
        if args.promtool_out:
            args.promtool_out.write_text(yaml.safe_dump({"groups": got}, sort_keys=False))
        if not failures:
            print(f"  ok   {where}: PrometheusRule = rule files minus {pr.get('excludeRules') or 'nothing'}"
                  f" ({sum(len(g['rules']) for g in got)} rules"
                  f"{', runbooks at ' + pr['runbookBaseURL'] if pr.get('runbookBaseURL') else ''})")

    # The rules and the dashboard select job="<chart>": the ServiceMonitor must take the job
    # from the Service's app.kubernetes.io/name, and that label must be the chart's name.
    job = chart.name
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        if sm["spec"].get("jobLabel") != "app.kubernetes.io/name":
            failures.append(f"ServiceMonitor jobLabel is {sm['spec'].get('jobLabel')!r}, not app.kubernetes.io/name")
        for svc in (d for d in docs if d["kind"] == "Service"):
            if (svc["metadata"].get("labels") or {}).get("app.kubernetes.io/name") != job:
                failures.append(f"Service {svc['metadata']['name']} would give job "
                                f"{svc['metadata'].get('labels', {}).get('app.kubernetes.io/name')!r}, the rules select {job!r}")

    gd = values["grafanaDashboard"]
    maps = [d for d in docs if d["kind"] == "ConfigMap"
            and (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if not gd["enabled"]:
        if maps:
            failures.append("a dashboard ConfigMap rendered with grafanaDashboard.enabled false")
    elif len(maps) != 1:
        failures.append(f"{len(maps)} dashboard ConfigMaps rendered, expected 1")
    else:
        cm = maps[0]
        files = {p.name: p.read_text() for p in sorted((chart / "files/dashboards").glob("*.json"))}
        if cm.get("data") != files:
            failures.append(f"the ConfigMap's data is not files/dashboards/ as is: {sorted(cm.get('data') or {})}")
        for text in (cm.get("data") or {}).values():
            json.loads(text)
        meta = cm["metadata"]
        for k, v in (gd.get("labels") or {}).items():
            if (meta.get("labels") or {}).get(k) != v:
                failures.append(f"dashboard ConfigMap lacks the label {k}: {v}")
        if (meta.get("annotations") or {}) != (gd.get("annotations") or {}):
            failures.append("dashboard ConfigMap annotations differ from grafanaDashboard.annotations")
        if not failures:
            print(f"  ok   {where}: dashboard ConfigMap holds {', '.join(files)} as is, sidecar label set")

    for f in failures:
        print(f"  FAIL {where}: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
