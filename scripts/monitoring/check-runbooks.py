#!/usr/bin/env python3
"""Every alert has its runbook, and every runbook belongs to an alert.

    scripts/monitoring/check-runbooks.py

Reads every alert of charts/*/files/*.yaml and docs/runbooks/*.md: each alert's
`runbook_url` is `<upstream>/docs/runbooks/<its own name>.md` and that file exists; each
runbook file (README.md aside) is the `runbook_url` of some alert and is listed in
docs/runbooks/README.md; relative links in the runbooks point at files that exist; each
line of a ```promql block parses (promtool on PATH) and names only metrics the services
export or the rules record (lint-dashboards.py's list).
"""

import importlib.util
import pathlib
import re
import shutil
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
UPSTREAM = "https://github.com/invoice-platform/invoice-platform/blob/main/docs/runbooks/"


def promql_checks() -> list[str]:
    """Each line of a ```promql block parses (promtool) and names known metrics only, with
    the same rules as lint-dashboards.py."""
    spec = importlib.util.spec_from_file_location("lint", pathlib.Path(__file__).with_name("lint-dashboards.py"))
    lint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lint)
    known, _ = lint.known_metrics()
    exprs, errs = [], []
    for p in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```promql\n(.*?)```", p.read_text(), re.S):
            for line in block.splitlines():
                expr = re.sub(r"\s+#.*$", "", line).strip()
                if not expr:
                    continue
                exprs.append(expr)
                for m in sorted(lint.metric_names(expr) - known):
                    errs.append(f"docs/runbooks/{p.name}: unknown metric {m!r} in {expr}")
    promtool = shutil.which("promtool")
    if not promtool:
        return errs + ["promtool not found: the runbooks' PromQL cannot be parsed"]
    errs += [f"docs/runbooks: {e}" for e in lint.promql_errors(exprs, promtool)]
    if not errs:
        print(f"  ok   runbooks: {len(exprs)} PromQL queries parse and name known metrics only")
    return errs


def main() -> int:
    errs = []
    alerts: dict[str, set[str]] = {}
    for f in sorted(ROOT.glob("charts/*/files/*.yaml")):
        for group in (yaml.safe_load(f.read_text()) or {}).get("groups", []):
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                url = (rule.get("annotations") or {}).get("runbook_url", "")
                alerts.setdefault(name, set()).add(url)
                if url != f"{UPSTREAM}{name}.md":
                    errs.append(f"{f.relative_to(ROOT)}: {name}: runbook_url {url!r} is not {UPSTREAM}{name}.md")
    linked = {u.removeprefix(UPSTREAM) for urls in alerts.values() for u in urls}
    pages = {p.name for p in RUNBOOKS.glob("*.md") if p.name != "README.md"}
    for name in sorted(alerts):
        if f"{name}.md" not in pages:
            errs.append(f"alert {name} has no runbook docs/runbooks/{name}.md")
    for page in sorted(pages - linked):
        errs.append(f"docs/runbooks/{page} is the runbook_url of no alert")
    index = (RUNBOOKS / "README.md").read_text() if (RUNBOOKS / "README.md").exists() else ""
    for page in sorted(pages):
        if f"({page})" not in index:
            errs.append(f"docs/runbooks/README.md does not list {page}")
    for p in sorted(RUNBOOKS.glob("*.md")):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", p.read_text()):
            if not (p.parent / target).exists():
                errs.append(f"docs/runbooks/{p.name}: link to {target}, which does not exist")
        if p.name != "README.md" and not p.read_text().startswith(f"# {p.stem}\n"):
            errs.append(f"docs/runbooks/{p.name}: does not start with '# {p.stem}'")
    errs += promql_checks()
    for e in errs:
        print(f"  FAIL {e}")
    if not errs:
        print(f"  ok   runbooks: {len(alerts)} alerts, each with docs/runbooks/<alert>.md; "
              f"{len(pages)} runbooks, each linked from its alert and listed in the index")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
