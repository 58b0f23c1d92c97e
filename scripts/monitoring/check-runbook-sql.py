#!/usr/bin/env python3
"""The runbooks' SQL runs against the services' real schemas on PostgreSQL.

    check-runbook-sql.py postgres://user@host:5432

Creates two scratch databases, applies invoice-app's and payment-provider's migrations
(crates/*/migrations/*/up.sql and crates/*/migrations-postgres/*/up.sql, by version) with psql, then runs every ```sql block of
docs/runbooks/*.md against the service whose tables it reads (the provider's: charges,
idempotency_keys, accounts), placeholders such as '<run id>' replaced by a made-up id.
Fails on any error (a misspelt column, a wrong table, PostgreSQL syntax); the databases
are dropped afterwards.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROVIDER_TABLES = re.compile(r"\b(idempotency_keys|accounts|FROM charges)\b")


def psql(url: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql,
                          capture_output=True, text=True)


def with_db(server: str, name: str) -> str:
    base, _, query = server.partition("?")
    base = re.sub(r"(//[^/]*)(/.*)?$", rf"\1/{name}", base)
    return base + (f"?{query}" if query else "")


def main() -> int:
    server = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TEST_DATABASE_URL", "")
    if not server:
        print("usage: check-runbook-sql.py postgres://user@host:5432 (or TEST_DATABASE_URL)")
        return 2
    if not shutil.which("psql"):
        print("  FAIL psql not found (Debian: postgresql-client)")
        return 1
    admin = with_db(server, "postgres")
    suffix = uuid.uuid4().hex[:8]
    dbs = {"invoice-app": f"runbook_sql_invoices_{suffix}", "payment-provider": f"runbook_sql_payments_{suffix}"}
    failures, ran = [], 0
    try:
        for service, db in dbs.items():
            res = psql(admin, f'CREATE DATABASE "{db}";')
            if res.returncode:
                print(f"  FAIL cannot create a scratch database: {res.stderr.strip()}")
                return 1
            # The shared set and PostgreSQL's own as one sequence by version (the directory
            # name), as the services run them.
            crate = ROOT / "crates" / service
            ups = sorted((up for d in ("migrations", "migrations-postgres")
                          for up in (crate / d).glob("*/up.sql")), key=lambda up: up.parent.name)
            for up in ups:
                res = psql(with_db(server, db), up.read_text())
                if res.returncode:
                    failures.append(f"{up.relative_to(ROOT)}: {res.stderr.strip()}")
        for page in sorted((ROOT / "docs" / "runbooks").glob("*.md")):
            for block in re.findall(r"```sql\n(.*?)```", page.read_text(), re.S):
                sql = re.sub(r"<[a-z ]+>", "made-up-id", block)
                service = "payment-provider" if PROVIDER_TABLES.search(sql) else "invoice-app"
                res = psql(with_db(server, dbs[service]), sql)
                ran += 1
                if res.returncode:
                    failures.append(f"docs/runbooks/{page.name} ({service}): {res.stderr.strip()}\n{sql}")
    finally:
        for db in dbs.values():
            psql(admin, f'DROP DATABASE IF EXISTS "{db}";')
    for f in failures:
        print(f"  FAIL {f}")
    if not failures:
        print(f"  ok   {ran} SQL blocks of docs/runbooks/ run on PostgreSQL against both services' migrations")
    return 1 if failures or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
