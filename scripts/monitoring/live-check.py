#!/usr/bin/env python3
"""Proves the rules and dashboards against a real Prometheus scraping the real services.

Starts payment-provider (with injected 503s) and invoice-app on SQLite, and Prometheus
(Debian's 2.42, from scripts/monitoring/install-tools.sh) scraping both every second with
the charts' rule files loaded. Then:

1. pays the demo invoices (and one the provider declines) through the faults, runs the
   daily run once (`invoice-app daily` against the same database, as the chart's CronJob
   does: its gauge exists only once one has completed), reads and creates invoices, and
   calls payment-provider once without a credential;
2. evaluates every rule expression and every dashboard panel query through Prometheus's
   HTTP API: each must parse; every recording rule and every panel query must return
   series; every metric name any of them uses must be one Prometheus has scraped (a
   renamed metric on either side fails here);
3. stops payment-provider and starts a pay run: InvoiceAppProviderUnreachable must be
   `firing` in /api/v1/alerts. Its `for` is cut from 5m to 10s in the copy loaded here
   (the one change made to the rules); everything else is the charts' files as they are.

    scripts/monitoring/live-check.py [--keep]    # --keep: leave the temp dir for reading
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
import promql  # noqa: E402
from services import Service, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(
    os.environ.get("TOOLS_DIR", Path.home() / ".cache/invoice-platform/tools")
) / "bin"
DEV_KEY = "dev-only-insecure-api-key"
PROVED_ALERT = "InvoiceAppProviderUnreachable"
DASHBOARDS = sorted((ROOT / "charts").glob("*/files/dashboards/*.json"))


def log(msg):
    print(f"[live-check] {msg}", flush=True)


def fail(msg):
    print(f"[live-check] FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def tool(name):
    found = shutil.which(name) or (
        str(TOOLS_BIN / name) if (TOOLS_BIN / name).exists() else None
    )
    if not found:
        fail(f"{name} not found; run scripts/monitoring/install-tools.sh")
    return found


def http(method, url, body=None, token=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    fail(f"{what} within {timeout}s")


def load_panels():
    panels = []
    for path in DASHBOARDS:
        stack = list(json.loads(path.read_text()).get("panels", []))
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            panels += [(path.relative_to(ROOT), panel.get("title"), t["expr"])
                       for t in panel.get("targets", []) if t.get("expr")]
    return panels


def write_prometheus_config(work, ports):
    rules_dir = work / "rules"
    rules_dir.mkdir()
    loaded = []
    for i, path in enumerate(promql.RULE_FILES):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == PROVED_ALERT:
                    rule["for"] = "10s"
        out = rules_dir / f"{i}-{path.parent.parent.name}-{path.name}"
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        loaded.append(str(out))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": loaded,
        "scrape_configs": [
            {
                "job_name": "invoice-app",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{ports['invoice-app']}"], "labels": {"namespace": "invoices"}}
                ],
            },
            {
                "job_name": "payment-provider",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{ports['payment-provider']}"], "labels": {"namespace": "payments"}}
                ],
            },
        ],
    }
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr):
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http("GET", url)
        try:
            answer = json.loads(body)
        except ValueError:  # a plain-text 503 while Prometheus starts
            return None, f"HTTP {status}: {body[:200]!r}"
        if status != 200 or answer.get("status") != "success":
            return None, answer.get("error", f"HTTP {status}")
        return answer["data"]["result"], None

    def alerts(self):
        _, body = http("GET", f"{self.base}/api/v1/alerts")
        return json.loads(body)["data"]["alerts"]


def names(expr):
    """The metric names expr reads; none for an expr that does not parse, which the query
    to Prometheus reports."""
    try:
        return promql.metric_names(expr)
    except ValueError:
        return set()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    prometheus_bin = tool("prometheus")
    rules, panels = promql.rules(), load_panels()
    if not DASHBOARDS:
        fail("no dashboard found under charts/*/files/dashboards")
    log(f"{len(rules)} rules from {len(promql.RULE_FILES)} files, {len(panels)} panel queries "
        f"from {len(DASHBOARDS)} dashboards")

    subprocess.run(["cargo", "build", "--locked", "--bins", "-q"], cwd=ROOT, check=True)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    bin_dir = Path(json.loads(meta.stdout)["target_directory"]) / "debug"

    work = Path(tempfile.mkdtemp(prefix="live-check-"))
    # Metrics on fixed ports: Prometheus is told where to scrape.
    metrics = {name: free_port() for name in ("payment-provider", "invoice-app")}
    services, prom_proc = [], None

    def start(name, env):
        env = {"METRICS_ADDR": f"127.0.0.1:{metrics[name]}", "SEED": "demo",
               "DATABASE_URL": f"sqlite://{work}/{name}.db", **env}
        try:
            services.append(Service(str(bin_dir / name), env, log=open(work / f"{name}.log", "ab")))
        except RuntimeError as e:
            fail(f"{name} did not start: {e} (see {work / name}.log, --keep keeps it)")
        return services[-1]

    try:
        provider = start("payment-provider", {"FAULT_UNAVAILABLE_RATE": "0.3", "FAULT_RETRY_AFTER_SECS": "0"})
        # No schedule of its own: the runs below are started on purpose.
        app_env = {"PAY_SCHEDULE": "off", "DAILY_SCHEDULE": "off", "PAYMENT_PROVIDER_URL": provider.url,
                   "RETRY_MAX_ELAPSED_SECS": "20", "CHARGE_TIMEOUT_MS": "1000"}
        app = start("invoice-app", app_env).url
        config = write_prometheus_config(work, metrics)
        prom_port = free_port()
        prom_proc = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=open(work / "prometheus.log", "ab"), stderr=subprocess.STDOUT,
        )
        prom = Prometheus(prom_port)

        def targets_up():
            result, _ = prom.query("sum(up)")
            return bool(result) and float(result[0]["value"][1]) == 2

        wait_for("Prometheus scraping both services", targets_up, 60)

        # 1. Traffic: the demo invoices and one for a customer the provider does not know
        # (a decline) paid through injected 503s; reads; a charge without a credential.
        status, _ = http(
            "POST", f"{app}/invoices",
            {"customer_id": "C999", "amount": {"minor_units": 100, "currency": "EUR"}},
            token=DEV_KEY,
        )
        if status != 201:
            fail(f"creating an invoice answered {status}")
        status, _ = http("POST", f"{provider.url}/v1/charges", {})
        if status != 401:
            fail(f"a charge without a credential answered {status}, not 401")
        status, body = http("POST", f"{app}/invoices/pay", token=DEV_KEY)
        if status != 200:
            fail(f"pay run answered {status}: {body[:300]!r}")
        summary = json.loads(body)["summary"]
        log(f"pay run through injected faults: {summary}")
        # The daily run as the CronJob runs it: its own process on the app's database.
        daily = subprocess.run(
            [str(bin_dir / "invoice-app"), "daily"],
            env={**os.environ, **app_env, "DATABASE_URL": f"sqlite://{work}/invoice-app.db",
                 "SEED": "none", "LOG_FORMAT": "json"},
            capture_output=True, text=True, timeout=180,
        )
        if daily.returncode != 0:
            fail(f"invoice-app daily exited {daily.returncode}: {daily.stderr.strip()[-500:]}")
        log(f"daily run: {daily.stdout.strip().splitlines()[-1]}")
        status, body = http(
            "POST", f"{app}/invoices",
            {"customer_id": "C001", "amount": {"minor_units": 250, "currency": "EUR"}},
            token=DEV_KEY,
        )
        if status != 201:
            fail(f"creating an invoice answered {status}")
        invoice_id = json.loads(body)["id"]
        for path in ("/invoices", f"/invoices/{invoice_id}", "/invoices/nope"):
            http("GET", app + path, token=DEV_KEY)
        time.sleep(4)  # a few scrapes and rule evaluations

        # 2. Every expression: valid; recording rules and panels with series; every
        # metric name known to Prometheus.
        problems = []
        scraped = {
            r["metric"]["__name__"]
            for r in prom.query('count by (__name__) ({__name__=~".+"})')[0]
        }
        names_used = set()
        for source, rule in rules:
            name = rule.get("record") or rule.get("alert")
            result, error = prom.query(rule["expr"])
            if error:
                problems.append(f"{source} {name}: invalid: {error}")
            elif "record" in rule and not result:
                problems.append(f"{source} {name}: no series")
            names_used |= names(rule["expr"])
        for source, title, expr in panels:
            result, error = prom.query(promql.for_prometheus(expr))
            if error:
                problems.append(f"{source} panel {title!r}: invalid: {error}: {expr}")
            elif not result:
                problems.append(f"{source} panel {title!r}: no series: {expr}")
            names_used |= names(expr)
        unknown = sorted(names_used - scraped)
        if unknown:
            problems.append(f"metric names no service exports: {', '.join(unknown)}")
        if problems:
            fail("\n  " + "\n  ".join(problems))
        log(f"{len(rules)} rule expressions and {len(panels)} panel queries valid, every "
            f"recording rule and panel with series, {len(names_used)} metric names all scraped")

        # 3. The provider down for a whole run: the alert fires.
        provider.proc.kill()
        provider.proc.wait()
        for n in range(30):
            http("POST", f"{app}/invoices",
                 {"customer_id": "C002", "amount": {"minor_units": 100 + n, "currency": "EUR"}},
                 token=DEV_KEY)
        status, _ = http("POST", f"{app}/pay-runs", token=DEV_KEY)
        if status != 202:
            fail(f"starting a pay run answered {status}")
        started = time.monotonic()

        def firing():
            return any(
                a["labels"].get("alertname") == PROVED_ALERT and a["state"] == "firing"
                for a in prom.alerts()
            )

        wait_for(f"{PROVED_ALERT} firing with payment-provider down", firing, 90)
        log(f"{PROVED_ALERT} firing {time.monotonic() - started:.0f}s after the provider "
            f"went down (its `for` cut to 10s here)")
        log("OK")
    finally:
        for service in services:
            service.proc.kill()
            service.proc.wait()
        if prom_proc:
            prom_proc.terminate()
            prom_proc.wait()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
