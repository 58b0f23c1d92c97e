#!/usr/bin/env python3
"""Every alert has its runbook, and every runbook belongs to an alert.

    scripts/monitoring/check-runbooks.py

Reads every alert of charts/*/files/*.yaml and docs/runbooks/*.md: each alert's
`runbook_url` is `<upstream>/docs/runbooks/<its own name>.md` and that file exists; each
runbook file (README.md aside) is the `runbook_url` of some alert and is listed in
docs/runbooks/README.md; relative links in the runbooks point at files that exist; each
line of a ```promql block parses and names only metrics the services export or the rules
record (scripts/lib/promql.py).
"""

import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))
import promql  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
UPSTREAM = "https://github.com/invoice-platform/invoice-platform/blob/main/docs/runbooks/"


def promql_checks() -> list[str]:
    """Each line of a ```promql block parses and names known metrics only, as in the
    dashboards (scripts/lib/promql.py)."""
    known, _ = promql.known_metrics()
    exprs, errs = [], []
    for p in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```promql\n(.*?)```", p.read_text(), re.S):
            for line in block.splitlines():
                expr = re.sub(r"\s+#.*$", "", line).strip()
                if not expr:
                    continue
                exprs.append(expr)
                try:
                    errs += [f"docs/runbooks/{p.name}: unknown metric {m!r} in {expr}"
                             for m in sorted(promql.metric_names(expr) - known)]
                except ValueError as e:
                    errs.append(f"docs/runbooks/{p.name}: not PromQL ({e}): {expr}")
    if not errs:
        print(f"  ok   runbooks: {len(exprs)} PromQL queries parse and name known metrics only")
    return errs


def main() -> int:
    errs = []
    alerts: dict[str, set[str]] = {}
    for f, rule in promql.rules():
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
