#!/usr/bin/env python3
"""Each of invoice-app's runs is scheduled once, asserted over its rendered value sets.

Usage: check_schedules.py RENDERED.yaml...

Each RENDERED.yaml is invoice-app rendered with one of its ci/ value sets. For each run
(the monthly pay run and the daily run): with its CronJob rendered, the CronJob's container
runs the run's subcommand and the Deployment sets the run's in-process schedule to `off`;
without it, the Deployment sets a schedule that is not `off`. Either way the run has one
scheduler: replicas would not run it twice (billing periods see to that), but the
CronJob's settings (deadline, time zone) would then not be the ones that count.
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

# component of the CronJob's pods -> (subcommand, variable of the in-process schedule)
RUNS = {"pay-run": ("pay", "PAY_SCHEDULE"), "daily-run": ("daily", "DAILY_SCHEDULE")}


def main(paths: list[str]) -> int:
    failures = 0
    for path in paths:
        where = Path(path).stem
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        server = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in server.get("env") or []}
        cronjobs = {d["metadata"]["labels"].get("app.kubernetes.io/component"): d
                    for d in docs if d["kind"] == "CronJob"}
        for component, (command, variable) in RUNS.items():
            schedule = env.get(variable)
            cronjob = cronjobs.get(component)
            if cronjob:
                container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
                problems = []
                if container.get("args") != [command]:
                    problems.append(f"runs {container.get('args')}, not [{command!r}]")
                if schedule != "off":
                    problems.append(f"the Deployment's {variable} is {schedule!r}, not 'off'")
                how = f"CronJob {cronjob['metadata']['name']} runs `{command}`, {variable}=off"
            else:
                problems = [] if schedule and schedule != "off" else [
                    f"no CronJob and the Deployment's {variable} is " + (
                        "unset: the binary's default, not the chart's value" if schedule is None
                        else f"{schedule!r}: never scheduled")]
                how = f"in-process {variable}={schedule!r}"
            for problem in problems:
                failures += 1
                print(f"  FAIL {where}: {component}: {problem}")
            if not problems:
                print(f"  ok   {where}: {component} scheduled once: {how}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
