#!/usr/bin/env python3
"""`make bench`: measures both services side by side on this machine and prints a short
table and one JSON object.

1. Pay-run throughput (invoices paid per second) for 10,000 and 100,000 pending invoices,
   on SQLite and on PostgreSQL, both services on loopback with default settings; next to it
   the ceiling of the same PostgreSQL for single-row-update transactions (pgbench, the same
   client count as PAY_CONCURRENCY), so the figure reads as a ratio.
2. API latency under a fixed request rate (wrk with a per-connection delay): GET
   /invoices/{id}, GET /invoices?status=paid&limit=100, and /healthz as the ceiling.
3. Resident memory of each service, idle and at peak during the pay run.
4. Start-up to ready (/readyz 200) on a fresh SQLite file, migrations included.
5. Container image size when a Docker engine answers (skipped otherwise).

Needs: cargo, wrk, pgbench/psql for the PostgreSQL parts
(BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432). Sizes can be cut for a
quick look: BENCH_SIZES=1000,5000.
"""

import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from services import ROOT, TARGET, Service  # noqa: E402

BIN = os.path.join(TARGET, "release")
PG = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "10000,100000").split(",")]
CONCURRENCY = 16  # invoice-app's default PAY_CONCURRENCY
TOKEN = "bench-token-0123456789abcdef"
# invoice-app's API key: the production path of authentication (a digest compared per request).
API_KEY = "bench-api-key-0123456789abcdef"
API_KEYS = json.dumps([{"client": "bench", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                        "scopes": ["invoices:read", "invoices:write", "invoices:pay"]}])
CUSTOMERS = [("C001", "EUR"), ("C002", "EUR"), ("C003", "DKK"), ("C004", "SEK"),
             ("C005", "GBP"), ("C006", "USD"), ("C007", "NOK"), ("C008", "JPY")]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def http(method, url, timeout=30):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                 headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def psql(sql, db="postgres"):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", f"{PG}/{db}", "-c", sql],
                   check=True, stdout=subprocess.DEVNULL)


def pg_available():
    return shutil.which("psql") and subprocess.run(
        ["pg_isready", "-q", "-d", f"{PG}/postgres"]).returncode == 0


class Database:
    """A fresh database of one backend, removed afterwards."""

    def __init__(self, backend, name):
        self.backend = backend
        if backend == "sqlite":
            self.dir = tempfile.mkdtemp(prefix="bench-")
            self.path = os.path.join(self.dir, f"{name}.db")
            self.url = f"sqlite://{self.path}"
        else:
            self.name = f"bench_{name}_{uuid.uuid4().hex[:8]}"
            psql(f"CREATE DATABASE {self.name}")
            self.url = f"{PG}/{self.name}"

    def query(self, sql):
        if self.backend == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return conn.execute(sql).fetchall()
        out = subprocess.run(["psql", "-At", "-F", "|", self.url, "-c", sql], check=True,
                             capture_output=True, text=True).stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def drop(self):
        if self.backend == "sqlite":
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def seed_invoices(db, count):
    """Pending invoices spread over the demo customers, inserted in bulk."""
    customers = ", ".join(f"('{c}', '{cur}')" for c, cur in CUSTOMERS)
    if db.backend == "postgres":
        db.query(f"""
            INSERT INTO invoices (id, customer_id, amount_minor, currency, description, status,
                                  created_at, updated_at)
            SELECT 'bench-' || lpad(i::text, 9, '0'), c.column1, 100 + i % 25000, c.column2,
                   'bench', 'pending', now(), now()
            FROM generate_series(1, {count}) AS i
            JOIN (VALUES {customers}) AS c ON c.column1 = 'C00' || (1 + i % 8)""")
    else:
        rows = []
        for i in range(1, count + 1):
            customer, currency = CUSTOMERS[i % 8]
            rows.append((f"bench-{i:09d}", customer, 100 + i % 25000, currency))
        with sqlite3.connect(db.path) as conn:
            conn.executemany(
                "INSERT INTO invoices (id, customer_id, amount_minor, currency, description, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, 'bench', 'pending', "
                "datetime('now'), datetime('now'))", rows)


def start_pair(backend):
    pp_db, ia_db = Database(backend, "pp"), Database(backend, "ia")
    provider = Service(os.path.join(BIN, "payment-provider"), {"DATABASE_URL": pp_db.url, "SEED": "demo",
                                            "CALLER_TOKENS": f"invoice-app:{TOKEN}"})
    app = Service(os.path.join(BIN, "invoice-app"), {"DATABASE_URL": ia_db.url, "SEED": "none", "PAY_SCHEDULE": "off",
                                  "DAILY_SCHEDULE": "off", "PAYMENT_PROVIDER_URL": provider.url,
                                  "PAYMENT_PROVIDER_TOKEN": TOKEN, "API_KEYS": API_KEYS})
    return pp_db, ia_db, provider, app


def pay_run(backend, count):
    pp_db, ia_db, provider, app = start_pair(backend)
    try:
        seed_invoices(ia_db, count)
        idle = {"payment-provider": provider.memory_kib()[0], "invoice-app": app.memory_kib()[0]}
        status, run = http("POST", f"{app.url}/pay-runs")
        assert status == 202, run
        while True:
            time.sleep(0.2)
            _, run = http("GET", f"{app.url}/pay-runs/{run['id']}")
            if run["status"] != "running":
                break
        assert run["status"] == "completed", run
        peak = {"payment-provider": provider.memory_kib()[1], "invoice-app": app.memory_kib()[1]}
        # The run's own clock: from its claim of the first batch to its last settlement.
        seconds = (datetime.fromisoformat(run["finished_at"])
                   - datetime.fromisoformat(run["started_at"])).total_seconds()
        charges, distinct = pp_db.query("SELECT count(*), count(DISTINCT invoice_id) FROM charges")[0]
        assert int(charges) == int(distinct) == count == run["summary"]["paid"], (charges, distinct, run)
        result = {"backend": backend, "invoices": count, "seconds": round(seconds, 3),
                  "invoices_per_second": round(count / seconds, 1),
                  "rss_idle_mib": {k: round(v / 1024, 1) for k, v in idle.items()},
                  "rss_peak_mib": {k: round(v / 1024, 1) for k, v in peak.items()}}
        if count == max(SIZES):
            result["latency"] = latencies(app, ia_db)
        return result
    finally:
        app.stop()
        provider.stop()
        pp_db.drop()
        ia_db.drop()


def wrk(url, rate, seconds=10, connections=20, paths=None):
    """wrk at `rate` requests/s: each connection waits between requests, and short passes
    calibrate that wait so the measured pass lands on the rate (aiming 3% above, since
    timers only ever wait longer). Returns p50/p99 in ms and the achieved rate."""
    aim = rate * 1.03
    delay_ms = connections * 1000 / aim
    for _ in range(3):
        calibration = run_wrk(url, 2, connections, delay_ms, paths)
        if aim <= calibration["rps"] <= aim * 1.05:
            break
        # The wait plus the time a request takes is one cycle per connection.
        error_ms = connections * 1000 / max(calibration["rps"], 1) - connections * 1000 / aim
        delay_ms = max(delay_ms - error_ms, 0)
    data = run_wrk(url, seconds, connections, delay_ms, paths)
    return {"target_rps": rate, "achieved_rps": round(data["rps"], 1), "p50_ms": round(data["p50"], 3),
            "p99_ms": round(data["p99"], 3), "errors": data["errors"]}


def run_wrk(url, seconds, connections, delay_ms, paths):
    script = ["local paths = {" + ",".join(json.dumps(p) for p in (paths or [""])) + "}",
              "local n = 0",
              f"function delay() return {delay_ms:.3f} end",
              "function request() n = n + 1; return wrk.format(nil, paths[(n % #paths) + 1]) end",
              "done = function(summary, latency, requests)",
              '  io.write(string.format("JSON {\\"p50\\": %f, \\"p99\\": %f, \\"rps\\": %f, \\"errors\\": %d}\\n",',
              "    latency:percentile(50) / 1000, latency:percentile(99) / 1000,",
              "    summary.requests / (summary.duration / 1e6),",
              "    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))",
              "end"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(script))
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", f.name,
                              "-H", f"Authorization: Bearer {API_KEY}", url],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    return json.loads(line[5:])


def latencies(app, ia_db):
    ids = [r[0] for r in ia_db.query("SELECT id FROM invoices ORDER BY id LIMIT 2000")]
    return {
        "GET /invoices/{id}": wrk(app.url, 2000, paths=[f"/invoices/{i}" for i in ids]),
        "GET /invoices?status=paid&limit=100": wrk(app.url, 500, paths=["/invoices?status=paid&limit=100"]),
        "GET /healthz (ceiling)": wrk(app.url, 2000, paths=["/healthz"]),
    }


def pgbench_ceiling():
    name = f"bench_pgbench_{uuid.uuid4().hex[:8]}"
    psql(f"CREATE DATABASE {name}")
    try:
        url = f"{PG}/{name}"
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", url], check=True, capture_output=True)
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write("\\set aid random(1, 1000000)\n"
                    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")
        out = subprocess.run(["pgbench", "-n", "-c", str(CONCURRENCY), "-j", "2", "-T", "10",
                              "-f", f.name, url], check=True, capture_output=True, text=True).stdout
        os.unlink(f.name)
        tps = next(l for l in out.splitlines() if l.startswith("tps"))
        return {"clients": CONCURRENCY, "update_tps": round(float(tps.split("=")[1].split()[0]), 1)}
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def startup():
    result = {}
    for name in ("payment-provider", "invoice-app"):
        times = []
        for _ in range(5):
            db = Database("sqlite", "startup")
            svc = Service(os.path.join(BIN, name), {"DATABASE_URL": db.url, "SEED": "none", "PAY_SCHEDULE": "off",
                                                    "DAILY_SCHEDULE": "off"})
            times.append(svc.ready_after * 1000)
            svc.stop()
            db.drop()
        result[name] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
    return result


def image_sizes():
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode:
        return {"skipped": "no Docker engine answers on this machine"}
    sizes = {}
    for app in ("payment-provider", "invoice-app"):
        tag = f"invoice-platform/{app}:bench"
        subprocess.run(["docker", "build", "-q", "--build-arg", f"APP={app}", "-t", tag, ROOT], check=True)
        out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag],
                             check=True, capture_output=True, text=True).stdout
        sizes[app] = {"mib": round(int(out) / 1048576, 1)}
    return sizes


def ensure_tools():
    missing = [t for t in ("wrk",) if not shutil.which(t)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=False,
                       stdout=subprocess.DEVNULL)
    missing = [t for t in missing if not shutil.which(t)]
    if missing:
        sys.exit(f"bench: install {', '.join(missing)} first (Debian: apt-get install {' '.join(missing)})")


def main():
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bins"], cwd=ROOT, check=True)
    report = {"machine": {"cores": os.cpu_count()}, "pay_runs": [], "startup": startup()}
    backends = ["sqlite"] + (["postgres"] if pg_available() else [])
    if "postgres" not in backends:
        log(f"PostgreSQL at {PG} is not answering: its figures are skipped")
    else:
        report["pgbench"] = pgbench_ceiling()
    for backend in backends:
        for count in SIZES:
            log(f"pay run: {count} invoices on {backend} ...")
            report["pay_runs"].append(pay_run(backend, count))
    report["images"] = image_sizes()

    log("\nbackend   invoices  seconds  invoices/s  peak RSS provider/app (MiB)")
    for r in report["pay_runs"]:
        log(f"{r['backend']:<9} {r['invoices']:>8}  {r['seconds']:>7}  {r['invoices_per_second']:>10}"
            f"  {r['rss_peak_mib']['payment-provider']}/{r['rss_peak_mib']['invoice-app']}")
    if "pgbench" in report:
        log(f"pgbench single-row updates, {CONCURRENCY} clients: {report['pgbench']['update_tps']} tps")
    for r in report["pay_runs"]:
        for path, l in r.get("latency", {}).items():
            log(f"{r['backend']:<9} {path:<40} {l['achieved_rps']:>8} rps  p50 {l['p50_ms']} ms  p99 {l['p99_ms']} ms")
    for name, s in report["startup"].items():
        log(f"start-up to ready, {name}: median {s['median_ms']} ms (max {s['max_ms']} ms)")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
