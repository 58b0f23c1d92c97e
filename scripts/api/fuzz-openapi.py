#!/usr/bin/env python3
"""Validates invoice-app's OpenAPI document (openapi-spec-validator), then fuzzes the app
from it with schemathesis, authenticated with a fresh API key (every check, which includes
that each operation refuses a request without it; the coverage, fuzzing and stateful phases;
a fixed seed so a failure replays; generated Idempotency-Keys made distinct per body by
fuzz_hooks.py), on SQLite and, when TEST_DATABASE_URL names a PostgreSQL server, on
PostgreSQL too. Fails on any finding:
a 5xx, an answer the document does not describe, valid input refused or invalid accepted.

    scripts/api/fuzz-openapi.py      # or: make fuzz-api

Needs cargo and python3; installs schemathesis into a cached venv
(~/.cache/invoice-platform/schemathesis-venv) on first use.
"""

import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from services import ROOT, TARGET, Service, venv  # noqa: E402

SCHEMATHESIS = "schemathesis==4.32.5"
SPEC_VALIDATOR = "openapi-spec-validator==0.9.0"
DOCUMENT = os.path.join(ROOT, "crates", "invoice-app", "openapi.json")
SEED = "20261122"
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "100")
HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_hooks.py")


def postgres_url(server, scratch_db):
    url = f"{server.rstrip('/')}/{scratch_db}"
    # As the test databases: no TLS unless the URL asks for a mode.
    return url if "?" in url else f"{url}?sslmode=disable"


def api_key_env(key):
    """invoice-app configured with one API key holding every scope: the production path of
    authentication, not the development key."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return {"API_KEYS": json.dumps([{"client": "fuzz", "sha256": digest,
                                     "scopes": ["invoices:read", "invoices:write", "invoices:pay"]}])}


def fuzz(backend, schemathesis, provider_url, scratch):
    server = os.environ.get("TEST_DATABASE_URL", "")
    db = None
    if backend == "postgres":
        db = f"fuzz_{uuid.uuid4().hex[:8]}"
        subprocess.run(["psql", "-q", f"{server.rstrip('/')}/postgres", "-c", f"CREATE DATABASE {db}"],
                       check=True)
        url = postgres_url(server, db)
    else:
        url = f"sqlite://{scratch}/invoice-app.db"
    log_path = os.path.join(scratch, f"invoice-app-{backend}.log")
    key = secrets.token_urlsafe(32)
    try:
        with open(log_path, "w") as log:
            app = Service(os.path.join(TARGET, "debug", "invoice-app"), {
                "DATABASE_URL": url, "SEED": "demo", "PAY_SCHEDULE": "off", "DAILY_SCHEDULE": "off",
                "PAYMENT_PROVIDER_URL": provider_url, **api_key_env(key)}, log=log)
        try:
            print(f"== schemathesis against invoice-app on {backend}", flush=True)
            # With the key every operation is reachable; the `ignored_auth` check of
            # `--checks all` also tries each one without it and expects a 401.
            done = subprocess.run([
                schemathesis, "run", f"{app.url}/openapi.json", "--checks", "all",
                "--header", f"Authorization: Bearer {key}",
                "--phases", "coverage,fuzzing,stateful", "--max-examples", EXAMPLES,
                "--seed", SEED, "--continue-on-failure", "--no-color"], cwd=scratch,
                env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS})
        finally:
            app.stop()
        if done.returncode != 0:
            print(open(log_path).read()[-4000:], file=sys.stderr)
        return done.returncode == 0
    finally:
        if db:
            subprocess.run(["psql", "-q", f"{server.rstrip('/')}/postgres", "-c",
                            f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)


def main():
    python = venv("schemathesis-venv", SCHEMATHESIS, SPEC_VALIDATOR)
    tools = os.path.dirname(python)
    schemathesis = os.path.join(tools, "schemathesis")
    # The document the app serves (compiled in from this file) must be valid OpenAPI first.
    subprocess.run([os.path.join(tools, "openapi-spec-validator"), DOCUMENT], check=True)
    subprocess.run(["cargo", "build", "--locked", "-q", "--bins"], cwd=ROOT, check=True)
    backends = ["sqlite"] + (["postgres"] if os.environ.get("TEST_DATABASE_URL") else [])
    with tempfile.TemporaryDirectory() as scratch:
        provider = Service(os.path.join(TARGET, "debug", "payment-provider"), {
            "DATABASE_URL": f"sqlite://{scratch}/payment-provider.db", "SEED": "demo"})
        try:
            failed = [b for b in backends if not fuzz(b, schemathesis, provider.url, scratch)]
        finally:
            provider.stop()
    if failed:
        sys.exit(f"fuzz-openapi: findings on {', '.join(failed)} (replay with the curl lines above)")
    print(f"fuzz-openapi: no findings on {', '.join(backends)}")


if __name__ == "__main__":
    main()
