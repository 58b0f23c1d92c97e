#!/usr/bin/env python3
"""`make test-chaos`: the money path under crashes, faults and three replicas, judged by
what both databases say afterwards, not by what the API answered.

1. Two fresh PostgreSQL databases (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432),
   debug binaries, payment-provider with injected 503s and latency and a seed of a few
   hundred accounts: funded, underfunded (some exactly enough for some of their invoices),
   empty, in another currency than their invoices, and customers it has no account for.
2. Three invoice-app processes on one invoices database (short lease, budget and timeout,
   and a dunning schedule of seconds, so soft declines are retried within the run);
   4,000 invoices, inserted into its database in waves and created through its API while
   the chaos goes on.
3. Pay runs started on random replicas (`POST /pay-runs`, `POST /invoices/pay`) while,
   a moment after the waves: replicas are SIGKILLed and restarted, the provider is
   SIGKILLed and stays down for longer than a lease, and twice the attempt rows of the
   calls in flight are locked for longer than a lease. Meanwhile the provider's operator
   (`payment-provider accounts …`) pays into accounts that started empty, lifts holds put
   on before the first run, and closes accounts, at random moments, so past-due invoices
   are paid, given up on or failed by later retries. `invoice-app reconcile` (the real
   binary) runs at random moments too, looking up invoices whose answers were lost. Then
   runs go on until nothing is
   pending, processing or past due, one more run on each replica after a lease has passed
   closes the runs of the dead, and settled invoices' keys are sent to the provider again
   from outside.
4. The invariants, read from both databases, each printed with its figures. Any that
   fails makes the exit status 1.

    scripts/chaos/chaos.py [--seed N] [--invoices N] [--customers N] [--keep]
                           [--freeze] [--cut-db]

`--freeze` also stops a replica (SIGSTOP) inside its transactions for longer than a lease;
`--cut-db` terminates every connection to the invoices database once. Everything random
comes from the seed (printed at the start and on failure), so a run can be replayed with
the same data and the same plan; what the processes do in between depends on timing, as it
would in production. Needs cargo, psql and python3 (standard library only).
"""

import argparse
import collections
import heapq
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from services import ROOT, TARGET, Service, free_port  # noqa: E402

SERVER = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
# invoice-app's development key (accepted on loopback when no API auth is configured).
API_KEY = "dev-only-insecure-api-key"
CALLER = "invoice-app"
PROVIDER_TOKEN = "chaos-caller-token-0123456789abcdef"
REPLICAS = 3
# Short enough that leases lapse within the test; the lease is the smallest the start-up
# rule allows for this budget and timeout, rounded up to invoice-app's minimum of 10 s.
LEASE_SECS = 10
BUDGET_SECS = 2
TIMEOUT_MS = 1000
PAY_CONCURRENCY = 4
PAY_MAX_RUNS = 2
POOL_SIZE = PAY_MAX_RUNS * (PAY_CONCURRENCY + 3) + 2
CURRENCIES = ["CHF", "DKK", "EUR", "GBP", "JPY", "NOK", "SEK", "USD"]
# A decline a later attempt may pass (dunning tries it again), and one it never will.
SOFT_DECLINES = ("insufficient_funds", "try_again_later")
HARD_DECLINES = ("customer_not_found", "currency_mismatch", "account_closed")
# invoice-app's DUNNING_SCHEDULE in seconds from the first soft decline: retries come
# within the chaos, and the last invoices are given up on a few seconds after the drain.
DUNNING_OFFSETS = (2, 4, 7)
RETRIES = len(DUNNING_OFFSETS)
CHAOS_SECS = 45  # kills and restarts happen in this window
OPERATOR_SECS = CHAOS_SECS + 15  # funds paid in and holds lifted until then
DRAIN_SECS = 150  # then at most this long until nothing is pending or processing


def log(msg):
    print(f"[{time.perf_counter() - START:6.1f}s] {msg}", flush=True)


START = time.perf_counter()


# ---------------------------------------------------------------------------------------
# Databases


def psql(url, sql, stdin=None):
    """Rows of `sql` as lists of strings (tab-separated, NULL as None)."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-P", "null=\\N",
         url, "-c", sql],
        input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return [[None if v == "\\N" else v for v in line.split("\t")]
            for line in out.stdout.splitlines() if line]


class Database:
    def __init__(self, role):
        self.name = f"chaos_{role}_{uuid.uuid4().hex[:8]}"
        psql(f"{SERVER}/postgres", f"CREATE DATABASE {self.name}")
        self.url = f"{SERVER}/{self.name}"
        # As the test databases: no TLS unless the server URL asks for a mode.
        self.service_url = self.url if "?" in self.url else f"{self.url}?sslmode=disable"

    def query(self, sql, stdin=None):
        return psql(self.url, sql, stdin)

    def drop(self):
        psql(f"{SERVER}/postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


# ---------------------------------------------------------------------------------------
# The data: accounts and invoices from the seed


def plan_data(rng, customers, invoices):
    """(accounts, invoices, kinds): accounts as {customer: (currency, opening balance)},
    invoices as dicts (the first ones for the database, the rest for the API), and each
    customer's kind. Short accounts are declined softly and go through dunning: the
    operator pays into `topped_up` ones later, lifts the hold on `held` ones and closes
    `closing` ones (see `plan_operator`)."""
    ids = [f"CX{n:04d}" for n in range(1, customers + 1)]
    kinds = {c: rng.choices(
        ["funded", "exact", "short", "empty", "other_currency", "mixed", "unknown",
         "topped_up", "held", "closing"],
        weights=[36, 16, 6, 3, 9, 8, 9, 8, 3, 2])[0] for c in ids}
    currency = {c: rng.choice(CURRENCIES) for c in ids}
    rows = []
    for n in range(invoices):
        c = rng.choice(ids)
        cur = currency[c]
        if kinds[c] == "other_currency" or (kinds[c] == "mixed" and rng.random() < 0.4):
            cur = rng.choice([x for x in CURRENCIES if x != currency[c]])
        rows.append({"n": n, "customer": c, "amount": rng.randint(100, 50_000), "currency": cur})
    by_customer = collections.defaultdict(list)
    for row in rows:
        by_customer[row["customer"]].append(row)
    accounts = {}
    for c in ids:
        own = [r["amount"] for r in by_customer[c] if r["currency"] == currency[c]]
        kind = kinds[c]
        if kind == "unknown":
            continue
        if kind in ("funded", "mixed", "other_currency", "held"):
            balance = sum(own) + rng.randint(0, 10_000)
        elif kind in ("exact", "closing"):
            # Exactly enough for a random part of its invoices: which ones get paid
            # depends on the order they are charged in; none may be declined while it
            # suffices.
            picked = [a for a in own if rng.random() < 0.5]
            balance = sum(picked) if picked else (own[0] if own else 0)
        elif kind == "short":
            balance = max(0, min(own, default=1) - 1)
        else:  # empty, or topped up by the operator during the run
            balance = 0
        accounts[c] = (currency[c], balance)
    return accounts, rows, kinds


def plan_operator(rng, accounts, rows, kinds):
    """What the provider's operator does, as [(seconds into the chaos or None for before
    the first run, action, customer, minor units)]: holds the `held` accounts before the
    first run and lifts all holds but one at random moments; pays the missing amount into
    `topped_up` accounts in parts of about an invoice each, so that most land while some
    of their invoices are past due (into some only part of it, so their last invoices are
    given up on); closes the `closing` accounts while they are dunned."""
    owed = collections.Counter()
    count = collections.Counter()
    for r in rows:
        if accounts.get(r["customer"], ("",))[0] == r["currency"]:
            owed[r["customer"]] += r["amount"]
            count[r["customer"]] += 1
    plan = []
    held = sorted(c for c, k in kinds.items() if k == "held")
    for i, c in enumerate(held):
        plan.append((None, "hold", c, None))
        if i > 0:  # the first stays on hold: its invoices are uncollectible
            plan.append((rng.uniform(3, OPERATOR_SECS), "release", c, None))
    for c in sorted(c for c, k in kinds.items() if k == "topped_up"):
        missing = owed[c] - accounts[c][1]
        if rng.random() < 0.3:
            missing = int(missing * rng.uniform(0.3, 0.9))
        if missing <= 0:
            continue
        parts = min(12, max(2, round(missing * count[c] / owed[c])))
        cuts = sorted({0, missing, *(rng.randint(1, missing) for _ in range(parts - 1))})
        for a, b in zip(cuts, cuts[1:]):
            plan.append((rng.uniform(2, OPERATOR_SECS), "fund", c, b - a))
    for c in sorted(c for c, k in kinds.items() if k == "closing"):
        plan.append((rng.uniform(5, CHAOS_SECS), "close", c, None))
    return plan


def major_units(minor, currency):
    """`1234` EUR as the operator types it: `12.34` (JPY has no minor unit)."""
    if currency == "JPY":
        return str(minor)
    return f"{minor // 100}.{minor % 100:02d}"


def write_seed(path, accounts):
    with open(path, "w") as f:
        json.dump([{"customer_id": c, "balance": {"minor_units": b, "currency": cur}}
                   for c, (cur, b) in sorted(accounts.items())], f)


def insert_invoices(db, rows):
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    lines = "".join(
        f"chaos-{r['n']:06d}\t{r['customer']}\t{r['amount']}\t{r['currency']}\tchaos\tpending\t{now}\t{now}\n"
        for r in rows)
    db.query("COPY invoices (id, customer_id, amount_minor, currency, description, status, "
             "created_at, updated_at) FROM STDIN", stdin=lines)


# ---------------------------------------------------------------------------------------
# Processes


def http(method, url, body=None, timeout=5, headers=None, answer=False):
    """The status of one request, or None when the service could not be reached; with
    `answer`, (status, headers, parsed body)."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, method=method, data=data, headers={
        "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json",
        **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            got = (r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        got = (e.code, e.headers, e.read())
    except (OSError, ValueError):
        return (None, {}, None) if answer else None
    if not answer:
        return got[0]
    try:
        return got[0], got[1], json.loads(got[2] or b"null")
    except ValueError:
        return got[0], got[1], None


def key_for(invoice, declines):
    """invoice-app's idempotency key for `invoice` after `declines` soft declines."""
    return f"invoice-{invoice}" if declines == 0 else f"invoice-{invoice}-retry-{declines}"


def parse_key(key):
    """(invoice, retry) from a key `key_for` makes, or None."""
    if not key.startswith("invoice-"):
        return None
    invoice, sep, n = key.removeprefix("invoice-").rpartition("-retry-")
    if not sep:
        return key.removeprefix("invoice-"), 0
    return (invoice, int(n)) if n.isdigit() and int(n) > 0 else None


def probe_keys(provider_url, ia, rng, count=40):
    """From outside, with invoice-app's credential: settled invoices' keys sent again, with
    the same body (the stored answer must come back, marked replayed: the charge of a paid
    invoice, the decline of a failed or uncollectible one, and a soft decline for each key
    a dunned invoice left behind) and with another amount (422 idempotency_key_reused).
    Returns (probes, problems); the ledger checks that follow prove nothing was charged."""
    rows = ia.query("SELECT id, customer_id, amount_minor, currency, status, charge_id, "
                    "failure_reason, attempt_count FROM invoices ORDER BY id")
    problems = []
    auth = {"Authorization": f"Bearer {PROVIDER_TOKEN}"}

    def charge(key, invoice, customer, amount, currency):
        for _ in range(20):  # injected 503s come first
            got = http("POST", f"{provider_url}/v1/charges", timeout=10, answer=True, body={
                "invoice_id": invoice, "customer_id": customer,
                "amount": {"minor_units": amount, "currency": currency}},
                headers={**auth, "Idempotency-Key": key})
            if got[0] != 503:
                return got
            time.sleep(0.05)
        return got

    dunned = [r for r in rows if int(r[7]) > 0]
    sample = rng.sample(rows, min(count, len(rows)))
    sample += rng.sample(dunned, min(count // 2, len(dunned)))
    probes = 0
    for invoice, customer, amount, currency, status, charge_id, reason, declines in sample:
        declines = int(declines)
        last = declines - 1 if status == "uncollectible" else declines
        # The key that settled it, and one it left after a soft decline.
        keys = [(key_for(invoice, last), status)]
        if last > 0:
            keys.append((key_for(invoice, rng.randrange(last)), "soft decline"))
        for key, expect in keys:
            probes += 1
            got, headers, body = charge(key, invoice, customer, int(amount), currency)
            body = body if isinstance(body, dict) else {}
            replayed = headers.get("Idempotent-Replayed") == "true"
            if expect == "paid":
                ok = got == 200 and replayed and body.get("id") == charge_id
            elif expect == "soft decline":
                ok = replayed and body.get("code") in SOFT_DECLINES
            else:
                ok = replayed and body.get("code") == reason
            if not ok:
                problems.append(f"{key} ({status}, {reason or charge_id}) sent again: {got} "
                                f"replayed={replayed} id={body.get('id')} code={body.get('code')}")
            got, _, body = charge(key, invoice, customer, int(amount) + 1, currency)
            code = body.get("code") if isinstance(body, dict) else None
            if (got, code) != (422, "idempotency_key_reused"):
                problems.append(f"{key} with another amount: {got} {code}")
    return probes, problems


class Cluster:
    """payment-provider and the invoice-app replicas, each on a port of its own that it
    keeps across restarts."""

    def __init__(self, scratch, provider_env, app_env):
        self.scratch = scratch
        self.provider_env = provider_env
        self.app_env = app_env
        self.lock = threading.Lock()
        self.provider_port = free_port()
        self.provider = None
        self.apps = [None] * REPLICAS
        self.app_ports = [free_port() for _ in range(REPLICAS)]
        self.frozen = set()  # replicas stopped with SIGSTOP
        self.kills = []  # (time, what)
        self.errors = []
        self.reconciles = []  # (exit status, summary) of each `invoice-app reconcile`

    def _log(self, name):
        return open(os.path.join(self.scratch, f"{name}.log"), "a")

    def start_provider(self):
        with self._log("payment-provider") as f:
            self.provider = Service(os.path.join(TARGET, "debug", "payment-provider"),
                                    self.provider_env, log=f, port=self.provider_port)

    def start_app(self, i):
        env = {**self.app_env, "HOSTNAME": f"chaos-replica-{i}"}
        with self._log(f"invoice-app-{i}") as f:
            # Start-up closes the runs of the dead, which waits for any lock on them.
            app = Service(os.path.join(TARGET, "debug", "invoice-app"), env, log=f,
                          port=self.app_ports[i], ready_timeout=90)
        with self.lock:
            self.apps[i] = app

    def restart_app(self, i):
        try:
            self.start_app(i)
            log(f"restarted invoice-app-{i}")
        except RuntimeError as e:
            self.errors.append(f"invoice-app-{i} did not start again: {e}")
            log(self.errors[-1])

    def kill_app(self, i):
        with self.lock:
            app, self.apps[i] = self.apps[i], None
        if app:
            app.proc.kill()
            app.proc.wait()
            self.kills.append((time.time(), f"invoice-app-{i}"))
        return app is not None

    def kill_provider(self):
        self.provider.proc.kill()
        self.provider.proc.wait()
        self.provider = None

    def reconcile(self):
        """`invoice-app reconcile` once, as an operator or the daily run would: the real
        binary on the invoices database, beside the replicas. Its summary is kept."""
        env = {"PATH": os.environ["PATH"], **self.app_env, "HOSTNAME": "chaos-reconcile",
               "LOG_FORMAT": "json", "RUST_LOG": "warn"}
        try:
            out = subprocess.run([os.path.join(TARGET, "debug", "invoice-app"), "reconcile"],
                                 env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            self.errors.append("invoice-app reconcile: no end within 120s")
            log(self.errors[-1])
            return
        # The summary, not a log line (the logs are JSON on stdout too).
        summary = next((d for d in (json.loads(line) for line in reversed(out.stdout.splitlines())
                                    if line.startswith("{")) if "run_id" in d and "paid" in d),
                       None)
        with self.lock:
            self.reconciles.append((out.returncode, summary))
        log(f"invoice-app reconcile → exit {out.returncode}: {summary}")

    def freeze_app(self, i):
        """SIGSTOP: the process holds its claims and connections but does nothing, as in a
        long pause; its leases lapse and its heartbeat stops."""
        with self.lock:
            app = self.apps[i]
            if not app:
                return False
            self.frozen.add(i)
        app.proc.send_signal(signal.SIGSTOP)
        return True

    def thaw_app(self, i):
        with self.lock:
            self.frozen.discard(i)
            app = self.apps[i]
        if app:
            app.proc.send_signal(signal.SIGCONT)

    def running(self):
        """Indexes of the replicas that are up and not frozen."""
        with self.lock:
            return [i for i, a in enumerate(self.apps) if a and i not in self.frozen]

    def live_apps(self):
        with self.lock:
            return [a for i, a in enumerate(self.apps) if a and i not in self.frozen]

    def stop(self):
        for i, app in enumerate(self.apps):
            if app:
                app.stop()
                self.apps[i] = None
        if self.provider:
            self.provider.stop()
            self.provider = None

    def kill_everything(self):
        for app in self.apps:
            if app and app.proc.poll() is None:
                app.proc.send_signal(signal.SIGCONT)
                app.proc.kill()
        if self.provider and self.provider.proc.poll() is None:
            self.provider.proc.kill()


class Operator:
    """The provider's operator at the console: each action of the plan is the real
    `payment-provider accounts …` command on the provider's database at its moment, while
    the chaos goes on (the provider may be down: the command needs only its database).
    Each action done is kept with when its command started and ended, which bound when it
    took effect."""

    def __init__(self, env, plan, currency):
        self.env = {"PATH": os.environ["PATH"], "LOG_FORMAT": "json", "RUST_LOG": "warn", **env}
        self.plan = plan
        self.currency = currency  # each customer's account currency
        self.done = []
        self.errors = []

    def act(self, action, customer, minor):
        args = [action, customer]
        if action == "fund":
            args += [major_units(minor, self.currency[customer]), self.currency[customer]]
        command = f"payment-provider accounts {' '.join(args)}"
        start = time.time()
        try:
            out = subprocess.run([os.path.join(TARGET, "debug", "payment-provider"), "accounts",
                                  *args], env=self.env, capture_output=True, text=True,
                                 timeout=60)
        except subprocess.TimeoutExpired:
            self.errors.append(f"{command}: no answer within 60s")
            log(self.errors[-1])
            return
        if out.returncode != 0:
            self.errors.append(f"{command}: exit {out.returncode}: {out.stderr.strip()}")
            log(self.errors[-1])
            return
        self.done.append({"action": action, "customer": customer, "minor": minor,
                          "start": start, "end": time.time()})
        log(f"operator: {command} → {out.stdout.strip()}")

    def before_first_run(self):
        for at, action, customer, minor in self.plan:
            if at is None:
                self.act(action, customer, minor)

    def run(self):
        began = time.perf_counter()
        for at, action, customer, minor in sorted((p for p in self.plan if p[0] is not None),
                                                   key=lambda p: p[0]):
            time.sleep(max(0.0, at - (time.perf_counter() - began)))
            self.act(action, customer, minor)


def driver(cluster, rng, stop, api_invoices):
    """Until `stop`: pay runs on random replicas, background and synchronous, and new
    invoices through the API, spread over the chaos window."""
    sync_calls = []
    posted = 0
    began = time.perf_counter()
    while not stop.is_set():
        apps = cluster.live_apps()
        if apps:
            app = rng.choice(apps)
            if rng.random() < 0.75:
                http("POST", f"{app.url}/pay-runs")
            elif sum(t.is_alive() for t in sync_calls) < 2:
                t = threading.Thread(target=http, args=("POST", f"{app.url}/invoices/pay"),
                                     kwargs={"timeout": 60}, daemon=True)
                t.start()
                sync_calls.append(t)
            due = int(len(api_invoices) * min(1.0, (time.perf_counter() - began) / (CHAOS_SECS * 0.8)))
            while posted < due and apps:
                row = api_invoices[posted]
                posted += 1
                http("POST", f"{rng.choice(apps).url}/invoices", body={
                    "customer_id": row["customer"], "description": "chaos via API",
                    "amount": {"minor_units": row["amount"], "currency": row["currency"]}})
        stop.wait(rng.uniform(0.2, 0.8))


def chaos(cluster, ia, rng, waves, api_invoices, freeze, cut_db):
    """Runs the plan (from the seed) while the driver pays: waves of invoices inserted into
    the database, and kills and restarts, each a moment after a wave so that it hits work
    in flight."""
    events = []
    order = iter(range(1_000_000))  # ties in time keep the plan's order

    def plan(at, what, arg=None):
        heapq.heappush(events, (at, next(order), what, arg))

    wave_times = [0.0] + sorted(rng.uniform(3, CHAOS_SECS - 12) for _ in waves[1:])
    for at, rows in zip(wave_times, waves):
        plan(at, "wave", rows)
    for _ in range(rng.randint(5, 7)):
        plan(rng.choice(wave_times) + rng.uniform(0.5, 4), "kill_app")
    plan(rng.choice(wave_times[1:]) + rng.uniform(0.5, 3), "kill_provider")
    if freeze:
        plan(rng.choice(wave_times) + rng.uniform(0.5, 3), "freeze_app")
    if cut_db:
        plan(rng.choice(wave_times) + rng.uniform(0.5, 3), "cut_db")
    for _ in range(2):
        plan(rng.choice(wave_times) + rng.uniform(0.5, 3), "stall_db")
    for _ in range(rng.randint(4, 6)):
        plan(rng.uniform(2, CHAOS_SECS), "reconcile")
    background = []  # stalls and restarts
    stop = threading.Event()
    thread = threading.Thread(target=driver, args=(cluster, random.Random(rng.random()), stop,
                                                   api_invoices), daemon=True)
    began = time.perf_counter()
    thread.start()
    try:
        while events:
            at, _, what, arg = heapq.heappop(events)
            time.sleep(max(0.0, at - (time.perf_counter() - began)))
            if what == "wave":
                insert_invoices(ia, arg)
                log(f"{len(arg)} invoices inserted; invoices {status_counts(ia)}")
            elif what == "kill_app":
                live = cluster.running()
                if not live:
                    continue
                i = rng.choice(live)
                cluster.kill_app(i)
                log(f"SIGKILL invoice-app-{i}; invoices {status_counts(ia)}")
                plan(at + rng.uniform(0.3, 3), "start_app", i)
            elif what == "freeze_app":
                # Writes of attempts wait behind a short table lock, so the replica is
                # stopped in the middle of its transactions, as a long pause would catch it.
                background.append(threading.Thread(target=quietly, daemon=True, args=(
                    ia.query, "BEGIN; LOCK TABLE payment_attempts IN EXCLUSIVE MODE; "
                    "SELECT pg_sleep(3); COMMIT")))
                background[-1].start()
                plan(at + 1, "sigstop")
            elif what == "sigstop":
                live = cluster.running()
                if len(live) < 2:
                    continue
                i = rng.choice(live)
                pause = rng.uniform(LEASE_SECS + 3, LEASE_SECS + 6)
                cluster.freeze_app(i)
                log(f"SIGSTOP invoice-app-{i} for {pause:.1f}s, its attempt writes waiting "
                    f"behind a table lock; invoices {status_counts(ia)}")
                plan(at + pause, "thaw_app", i)
            elif what == "stall_db":
                pause = rng.uniform(LEASE_SECS + 3, LEASE_SECS + 8)
                background.append(threading.Thread(target=quietly, daemon=True, args=(
                    lambda p=pause: log(f"{stall(ia, p)} attempts in flight were locked for "
                                        f"{p:.1f}s"),)))
                background[-1].start()
                log(f"locking the attempts in flight; invoices {status_counts(ia)}")
            elif what == "cut_db":
                cut = ia.query(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               f"WHERE datname = '{ia.name}' AND pid <> pg_backend_pid()")
                log(f"terminated {cut[0][0]} connections to the invoices database; "
                    f"invoices {status_counts(ia)}")
            elif what == "thaw_app":
                cluster.thaw_app(arg)
                log(f"SIGCONT invoice-app-{arg}; invoices {status_counts(ia)}")
            elif what == "start_app":
                # In the background: start-up waits for locks that a stopped replica may
                # hold until its SIGCONT, which comes from this loop.
                background.append(threading.Thread(
                    target=cluster.restart_app, args=(arg,), daemon=True))
                background[-1].start()
            elif what == "reconcile":
                background.append(threading.Thread(target=cluster.reconcile, daemon=True))
                background[-1].start()
            elif what == "kill_provider":
                cluster.kill_provider()
                log(f"SIGKILL payment-provider; invoices {status_counts(ia)}")
                # Down for longer than a lease: claims queued behind the failing calls
                # lapse and are taken over, as in a real outage.
                plan(at + rng.uniform(LEASE_SECS, LEASE_SECS + 5), "start_provider")
            elif what == "start_provider":
                cluster.start_provider()
                log("restarted payment-provider")
        time.sleep(max(0.0, CHAOS_SECS - (time.perf_counter() - began)))
        for t in background:
            t.join()
    finally:
        stop.set()
        thread.join()


def quietly(f, *args):
    """Runs `f` in a thread, saying in one line when it failed."""
    try:
        f(*args)
    except Exception as e:  # noqa: BLE001 - a lock taken from outside may be cut short
        log(f"{getattr(f, '__name__', 'a stall')} ended early: {e}")


def stall(db, secs):
    """Locks the attempt rows of the calls in flight right now for `secs`, longer than a
    lease (as a stuck transaction or an admin's `SELECT … FOR UPDATE` would): their results
    cannot be recorded, so their claims lapse and other runs take them over, while the rest
    of the system goes on. Returns how many rows it locked."""
    # Started within a timeout: calls of live processes, not the leftovers of killed ones.
    rows = db.query(f"BEGIN; SELECT count(*) FROM (SELECT 1 FROM payment_attempts "
                    f"WHERE outcome = 'started' AND started_at > (now() AT TIME ZONE 'UTC') "
                    f"- interval '{TIMEOUT_MS} milliseconds' FOR UPDATE) AS locked; "
                    f"SELECT pg_sleep({secs:.1f}); COMMIT")
    return int(rows[0][0]) if rows else 0


def status_counts(db):
    return {s: int(n) for s, n in db.query("SELECT status, count(*) FROM invoices GROUP BY status")}


def drain(cluster, ia, rng):
    """Pay runs until nothing is pending, processing or past due (the dunning schedule is
    seconds long, so every invoice comes to paid, failed or uncollectible); then, once a
    lease has passed since the last kill, one more run on each replica so the runs of dead
    processes are closed. Returns None, or why it did not finish in time."""
    deadline = time.perf_counter() + DRAIN_SECS
    while True:
        counts = status_counts(ia)
        if not any(counts.get(s) for s in ("pending", "processing", "past_due")):
            break
        if time.perf_counter() > deadline:
            attention = ia.query("SELECT attention, count(*) FROM invoices "
                                 "WHERE attention IS NOT NULL GROUP BY attention")
            return f"still unsettled after {DRAIN_SECS}s: {counts}; needing attention: {attention}"
        apps = cluster.live_apps()
        if not apps:
            return "no invoice-app is running"
        http("POST", f"{rng.choice(apps).url}/pay-runs")
        time.sleep(1)
    log(f"nothing pending, processing or past due: {counts}")
    # Everything settled: a reconciliation now finds nothing to look up.
    cluster.reconcile()
    last_kill = max((t for t, _ in cluster.kills), default=0)
    wait = last_kill + LEASE_SECS + 1 - time.time()
    if wait > 0:
        log(f"waiting {wait:.1f}s for the lease of the last killed replica to pass")
        time.sleep(wait)
    # Opening a run closes the runs whose heartbeat stopped; a replica that is busy (429)
    # is asked again.
    swept = time.perf_counter()
    while ia.query("SELECT count(*) FROM pay_runs WHERE status = 'running'")[0][0] != "0":
        if time.perf_counter() > swept + 30:
            return "pay runs still running 30 s after a lease had passed since the last kill"
        for app in cluster.live_apps():
            http("POST", f"{app.url}/pay-runs")
        time.sleep(2)
    return None


# ---------------------------------------------------------------------------------------
# Invariants


class Report:
    def __init__(self):
        self.failed = []

    def check(self, name, ok, figures, problems=()):
        problems = list(problems)
        ok = ok and not problems
        print(f"  {'ok  ' if ok else 'FAIL'}  {name}: {figures}")
        for p in problems[:8]:
            print(f"          - {p}")
        if len(problems) > 8:
            print(f"          … and {len(problems) - 8} more")
        if not ok:
            self.failed.append(name)


def load(ia, pp):
    inv = {}
    for (id_, customer, amount, cur, status, reason, charge, attention, claimed, lease, last_run,
         paid_at, updated, declines, since, next_attempt) in ia.query(
            "SELECT id, customer_id, amount_minor, currency, status, failure_reason, charge_id, "
            "attention, claimed_by, lease_until, last_run_id, extract(epoch FROM paid_at), "
            "extract(epoch FROM updated_at), attempt_count, extract(epoch FROM past_due_since), "
            "next_attempt_at FROM invoices"):
        inv[id_] = {"customer": customer, "amount": int(amount), "currency": cur,
                    "status": status, "reason": reason, "charge_id": charge,
                    "attention": attention, "claimed_by": claimed, "lease_until": lease,
                    "last_run": last_run, "declines": int(declines),
                    "past_due_since": float(since) if since else None,
                    "next_attempt_at": next_attempt,
                    # When the row was settled, exactly as the settling run wrote it (the
                    # same instant it wrote on its last attempt).
                    "settled_at": float(paid_at if status == "paid" else updated)}
    runs = {}
    for id_, status, paid, failed, retry_later, worker, started, finished in ia.query(
            "SELECT id, status, paid, failed, retry_later, worker_id, "
            "extract(epoch FROM started_at), extract(epoch FROM finished_at) FROM pay_runs"):
        runs[id_] = {"status": status, "paid": int(paid), "failed": int(failed),
                     "retry_later": int(retry_later), "worker": worker,
                     "started": float(started), "finished": float(finished) if finished else None}
    attempts = []
    for (id_, invoice, run, key, outcome, sent, http_status, charge, started,
         finished, kind) in ia.query(
            "SELECT id, invoice_id, pay_run_id, idempotency_key, outcome, sent, http_status, "
            "charge_id, extract(epoch FROM started_at), extract(epoch FROM finished_at), kind "
            "FROM payment_attempts ORDER BY started_at, id"):
        attempts.append({"id": id_, "invoice": invoice, "run": run, "key": key, "kind": kind,
                         "outcome": outcome, "sent": sent,
                         "http_status": int(http_status) if http_status else None,
                         "charge_id": charge, "started": float(started),
                         "finished": float(finished) if finished else None})
    accounts = {c: (cur, int(b), status) for c, cur, b, status in pp.query(
        "SELECT customer_id, currency, balance_minor, status FROM accounts")}
    ledger = [{"id": i, "caller": caller, "key": key, "invoice": invoice, "customer": c,
               "amount": int(a), "currency": cur, "created": float(created)}
              for i, caller, key, invoice, c, a, cur, created in pp.query(
                  "SELECT id, caller, idempotency_key, invoice_id, customer_id, amount_minor, "
                  "currency, extract(epoch FROM created_at) FROM charges")]
    keys = []
    for caller, key, state, status, body, completed in pp.query(
            "SELECT caller, idempotency_key, state, response_status, response_body, "
            "extract(epoch FROM completed_at) FROM idempotency_keys"):
        body = json.loads(body or "null")
        keys.append({"caller": caller, "key": key, "state": state,
                     "status": int(status) if status else None,
                     "code": body.get("code") if isinstance(body, dict) else None,
                     "charge_id": body.get("id") if isinstance(body, dict) else None,
                     "completed": float(completed) if completed else None})
    return inv, runs, attempts, accounts, ledger, keys


class Timeline:
    """What the operator did to each account, and what the ledger took from it, in time:
    enough to say whether an account could have been short, held or closed at a moment."""

    def __init__(self, opening, operated, ledger):
        self.opening = opening
        self.moves = collections.defaultdict(list)  # customer -> [(time, minor units)]
        self.paid_in = collections.Counter()
        # Each hold as [from, until]: `holds` the longest it can have lasted (from its
        # command's start to the end of the release's), `surely_held` the shortest.
        self.holds = collections.defaultdict(list)
        self.surely_held = collections.defaultdict(list)
        self.closed = {}  # customer -> (the close's start, its end)
        for a in sorted(operated, key=lambda a: a["start"]):
            c = a["customer"]
            if a["action"] == "fund":
                # In the balance from when its command returned at the latest.
                self.moves[c].append((a["end"], a["minor"]))
                self.paid_in[c] += a["minor"]
            elif a["action"] == "hold":
                self.holds[c].append([a["start"], float("inf")])
                self.surely_held[c].append([a["end"], float("inf")])
            elif a["action"] == "release" and self.holds[c]:
                self.holds[c][-1][1] = a["end"]
                self.surely_held[c][-1][1] = a["start"]
            elif a["action"] == "close":
                self.closed[c] = (a["start"], a["end"])
        for charge in ledger:
            # Stamped before its debit: out of the balance from then at the earliest.
            self.moves[charge["customer"]].append((charge["created"], -charge["amount"]))
        for moves in self.moves.values():
            moves.sort()

    def lowest_balance(self, customer, since, until):
        """The least the balance can have been between `since` and `until`."""
        balance = self.opening[customer][1]
        moves = iter(self.moves[customer])
        move = next(moves, None)
        while move and move[0] <= since:
            balance += move[1]
            move = next(moves, None)
        lowest = balance
        while move and move[0] <= until:
            balance += move[1]
            lowest = min(lowest, balance)
            move = next(moves, None)
        return lowest

    def held(self, customer, since, until):
        """Whether the account can have been on hold at some moment in between."""
        return any(a <= until and b >= since for a, b in self.holds[customer])

    def barred(self, customer, since, until):
        """Whether the account was on hold or closed for certain all along."""
        closed = self.closed.get(customer)
        return (any(a < since and until < b for a, b in self.surely_held[customer])
                or (closed is not None and closed[1] < since))

    def status_at_end(self, customer):
        if customer in self.closed:
            return "closed"
        held = self.holds[customer]
        return "on_hold" if held and held[-1][1] == float("inf") else "active"


def check_invariants(ia, pp, opening, operated, probes):
    inv, runs, attempts, accounts, ledger, keys = load(ia, pp)
    r = Report()
    print("invariants, read from invoice-app's and payment-provider's databases:")
    probed, problems = probes
    r.check("settled invoices' keys, and keys dunning left behind, sent again from outside get "
            "their stored answer, and with another amount 422 idempotency_key_reused (the "
            "ledger checks below hold after these)", True, f"{probed} keys sent twice each",
            problems)
    by_status = collections.Counter(i["status"] for i in inv.values())
    paid = {k: v for k, v in inv.items() if v["status"] == "paid"}
    failed = {k: v for k, v in inv.items() if v["status"] == "failed"}
    given_up = {k: v for k, v in inv.items() if v["status"] == "uncollectible"}
    timeline = Timeline(opening, operated, ledger)

    # Every invoice settled for good, and none still claimed, due or waiting for a person.
    r.check("every invoice is paid, failed or uncollectible; none claimed, due again or "
            "needing attention", set(by_status) <= {"paid", "failed", "uncollectible"},
            f"{len(inv)} invoices: {dict(by_status)}",
            [f"{k}: {v['status']} claimed_by={v['claimed_by']} attention={v['attention']} "
             f"next_attempt_at={v['next_attempt_at']}"
             for k, v in inv.items()
             if v["status"] not in ("paid", "failed", "uncollectible") or v["claimed_by"]
             or v["lease_until"] or v["attention"] or v["next_attempt_at"]])

    # Dunning's counts: the schedule bounds the attempts, and only a spent one gives up.
    problems = []
    for k, v in inv.items():
        n, why = v["declines"], v["reason"]
        if not 0 <= n <= RETRIES + 1:
            problems.append(f"{k}: {v['status']} after {n} soft declines")
        if v["status"] == "uncollectible" and (n != RETRIES + 1 or why not in SOFT_DECLINES):
            problems.append(f"{k}: uncollectible ({why}) after {n} soft declines")
        if v["status"] in ("paid", "failed") and n > RETRIES:
            problems.append(f"{k}: {v['status']} after {n} soft declines")
        if v["status"] == "failed" and why not in HARD_DECLINES:
            problems.append(f"{k}: failed for {why}, no hard decline")
        if (n > 0) != (v["past_due_since"] is not None):
            problems.append(f"{k}: {n} soft declines, past due since {v['past_due_since']}")
    declines = collections.Counter((v["status"], v["declines"]) for v in inv.values())
    r.check(f"attempt_count ≤ retries + 1 = {RETRIES + 1}; uncollectible exactly when the "
            "schedule is spent, for a soft reason; failed only for a hard one", True,
            "(status, attempt_count): " + ", ".join(f"{s} {n}: {c}"
                                                    for (s, n), c in sorted(declines.items())),
            problems)

    # Paid invoices against the ledger.
    ledger_by_id = {c["id"]: c for c in ledger}
    problems = []
    for k, v in paid.items():
        c = ledger_by_id.get(v["charge_id"])
        if not c:
            problems.append(f"{k} paid with {v['charge_id']}, which the ledger does not hold")
            continue
        want = {"invoice": k, "customer": v["customer"], "amount": v["amount"],
                "currency": v["currency"], "key": key_for(k, v["declines"]), "caller": CALLER}
        diff = {f: (c[f], w) for f, w in want.items() if c[f] != w}
        if diff:
            problems.append(f"{k}: ledger row {c['id']} differs (ledger, invoice): {diff}")
    r.check("every paid invoice's charge id is a ledger row with its amount, currency, "
            "customer, invoice id and the key of its attempt count", True,
            f"{len(paid)} paid invoices ({sum(1 for v in paid.values() if v['declines'])} "
            f"after dunning), {len(ledger)} ledger rows", problems)

    # Exactly one ledger row per paid invoice, none for any other, no other keys.
    per_invoice = collections.Counter(c["invoice"] for c in ledger)
    per_key = collections.Counter((c["caller"], c["key"]) for c in ledger)
    problems = [f"{k} ({inv.get(k, {}).get('status')}): {n} ledger rows"
                for k, n in per_invoice.items() if n != 1 or k not in paid]
    problems += [f"{k}: paid, no ledger row" for k in paid if k not in per_invoice]
    problems += [f"ledger row {c['id']} for {c['invoice']} has key {c['key']!r}"
                 for c in ledger if (parse_key(c["key"]) or ("",))[0] != c["invoice"]
                 or c["caller"] != CALLER]
    problems += [f"key {k}: {n} ledger rows" for k, n in per_key.items() if n > 1]
    r.check("exactly one ledger row per paid invoice, none for a failed or uncollectible one, "
            "none with another invoice's key", True,
            f"{len(ledger)} ledger rows for {len(per_invoice)} invoices; {len(paid)} invoices "
            "paid", problems)

    # The dunning as the provider saw it: one key per attempt count, each left only once
    # the provider declined it softly, and the last one's answer is the invoice's state.
    per_invoice_keys = collections.defaultdict(dict)
    problems = []
    for k in keys:
        parsed = parse_key(k["key"])
        if k["caller"] != CALLER or parsed is None or parsed[0] not in inv:
            problems.append(f"key {k['caller']}/{k['key']} names no invoice")
        elif k["state"] != "completed":
            problems.append(f"key {k['key']} left {k['state']}")
        else:
            per_invoice_keys[parsed[0]][parsed[1]] = k
    for invoice, v in inv.items():
        got, n = per_invoice_keys.get(invoice, {}), v["declines"]
        for i in range(n):
            k = got.get(i)
            if not k:
                problems.append(f"{invoice}: {n} soft declines, the provider has no key "
                                f"{key_for(invoice, i)}")
            elif k["code"] not in SOFT_DECLINES:
                problems.append(f"{invoice}: {n} soft declines, key {k['key']} stored "
                                f"{k['status']} {k['code']}")
        last = got.get(n)
        if v["status"] == "paid" and not (last and last["status"] == 201
                                          and last["charge_id"] == v["charge_id"]):
            problems.append(f"{invoice} paid with {v['charge_id']}, key {key_for(invoice, n)} "
                            f"stored {last and (last['status'], last['code'], last['charge_id'])}")
        if v["status"] == "failed" and not (last and last["code"] == v["reason"]):
            problems.append(f"{invoice} failed {v['reason']}, key {key_for(invoice, n)} "
                            f"stored {last and (last['status'], last['code'])}")
        if v["status"] == "uncollectible" and n and got.get(n - 1, {}).get("code") != v["reason"]:
            problems.append(f"{invoice} uncollectible {v['reason']}, its last key stored "
                            f"{got.get(n - 1, {}).get('code')}")
        beyond = sorted(set(got) - set(range(n + (v["status"] in ("paid", "failed")))))
        problems += [f"{invoice} ({v['status']} after {n} soft declines) has key "
                     f"{key_for(invoice, i)} ({got[i]['status']} {got[i]['code']})"
                     for i in beyond]
    r.check("each invoice's keys at the provider, all completed: invoice-<id>, then "
            "-retry-1 … -retry-<attempt_count - 1>, each a soft decline, then the answer "
            "that settled it (a charge ⇔ paid with it, a hard decline ⇔ failed for it, none "
            "beyond for an uncollectible one)", True,
            f"{len(keys)} keys, {collections.Counter(k['status'] for k in keys)}", problems)

    # Every decline was true when the provider gave it: the balance is rebuilt from the
    # opening balance, the ledger and the operator's payments (each counted as late as it
    # can have landed, each charge as early), so a moment of being short is never missed.
    declined_by = collections.defaultdict(list)
    for a in attempts:
        if a["outcome"] == "declined" and a["finished"] is not None:
            declined_by[a["key"]].append(a["finished"])
    codes = collections.Counter()
    problems = []
    for k in keys:
        parsed = parse_key(k["key"])
        if k["code"] not in SOFT_DECLINES + HARD_DECLINES or not parsed or parsed[0] not in inv:
            continue
        v = inv[parsed[0]]
        c, code = v["customer"], k["code"]
        codes[code] += 1
        account = accounts.get(c)
        # The provider decided after stamping the key's completion, and before the first
        # attempt that got the decline came back.
        since, until = k["completed"], min(declined_by[k["key"]], default=float("inf"))
        if code == "customer_not_found":
            ok = account is None
        elif code == "currency_mismatch":
            ok = account is not None and account[0] != v["currency"]
        elif code == "account_closed":
            ok = timeline.closed.get(c, (float("inf"),))[0] <= until
        elif code == "try_again_later":
            ok = timeline.held(c, since, until)
        else:
            ok = (account is not None and account[0] == v["currency"]
                  and timeline.lowest_balance(c, since, until) < v["amount"])
        if not ok:
            problems.append(
                f"{k['key']} declined {code} between {since:.3f} and {until:.3f}: "
                f"{v['amount']} {v['currency']} of {c}, account {account}, lowest balance "
                f"then {timeline.lowest_balance(c, since, until) if account else None}, "
                f"holds {timeline.holds.get(c)}, closed {timeline.closed.get(c)}")
    r.check("every decline the provider stored was true when given (insufficient_funds only "
            "while the balance was below the amount, try_again_later only while held, "
            "account_closed only once closed)", True, f"{dict(codes)}", problems)

    # No money taken while an account was held or closed: a charge is debited after its
    # stamp and before the first attempt that got it came back.
    charged_by = collections.defaultdict(list)
    for a in attempts:
        if a["outcome"] == "succeeded" and a["finished"] is not None:
            charged_by[a["key"]].append(a["finished"])
    problems = []
    for c in ledger:
        until = min(charged_by[c["key"]], default=float("inf"))
        if timeline.barred(c["customer"], c["created"], until):
            problems.append(f"ledger row {c['id']} of {c['invoice']} debited {c['customer']} "
                            f"between {c['created']:.3f} and {until:.3f}, holds "
                            f"{timeline.surely_held.get(c['customer'])}, closed "
                            f"{timeline.closed.get(c['customer'])}")
    barred = {c for c, held in timeline.surely_held.items() if held} | set(timeline.closed)
    r.check("no charge while its account was on hold or after it was closed", True,
            f"{sum(1 for c in ledger if c['customer'] in barred)} charges of the "
            f"{len(barred)} accounts the operator held or closed", problems)

    # Customers whose account covered all their invoices, and whom the operator left
    # alone, were never declined softly.
    operated_on = {a["customer"] for a in operated}
    funded = {c for c, (cur, b) in opening.items() if c not in operated_on
              and b >= sum(v["amount"] for v in inv.values()
                           if v["customer"] == c and v["currency"] == cur)}
    problems = []
    for k in keys:
        v = inv.get((parse_key(k["key"]) or ("",))[0])
        if v and v["customer"] in funded and k["code"] in SOFT_DECLINES:
            problems.append(f"{k['key']} of funded {v['customer']}: {k['code']}")
    r.check("no invoice of an account that covered all its invoices was declined softly",
            True, f"{len(funded)} such customers, "
            f"{sum(1 for v in paid.values() if v['customer'] in funded)} of their invoices paid",
            problems)

    # Balances, and where the operator left each account.
    debited = collections.Counter()
    for c in ledger:
        debited[c["customer"]] += c["amount"]
    problems = [f"{c}: opening {b}, paid in {timeline.paid_in[c]}, ledger {debited[c]}, "
                f"account {accounts.get(c)}"
                for c, (cur, b) in opening.items()
                if accounts.get(c) != (cur, b + timeline.paid_in[c] - debited[c],
                                       timeline.status_at_end(c))]
    problems += [f"account {c} appeared" for c in accounts if c not in opening]
    r.check("each balance = opening balance + what the operator paid in − the ledger total "
            "of its customer; each account held or closed as the operator left it", True,
            f"{len(opening)} accounts, {sum(timeline.paid_in.values())} minor units paid in "
            f"over {len(timeline.paid_in)} accounts, {sum(debited.values())} debited over "
            f"{len(debited)}; {collections.Counter(a[2] for a in accounts.values())}", problems)

    # Pay runs. A settlement writes the invoice and its last attempt with one timestamp, so
    # the run that changed a row is the one whose attempt carries the row's settle time:
    # each run's counts must be exactly the rows it changed. Giving up counts as failed;
    # past due, as handed back, as retry_later (not checked: hand-backs leave no trace).
    run_status = collections.Counter(v["status"] for v in runs.values())
    sum_paid = sum(v["paid"] for v in runs.values())
    sum_failed = sum(v["failed"] for v in runs.values())
    wrote = {"paid": collections.defaultdict(set), "failed": collections.defaultdict(set)}
    counted = {("succeeded", "paid"): "paid", ("declined", "failed"): "failed",
               ("declined", "uncollectible"): "failed"}
    for a in attempts:
        v = inv[a["invoice"]]
        what = counted.get((a["outcome"], v["status"]))
        if what and a["finished"] == v["settled_at"]:
            wrote[what][a["run"]].add(a["invoice"])
    problems = [f"run {k} is still running" for k, v in runs.items() if v["status"] == "running"]
    problems += [f"run {k} counts {v[what]} {what}, it settled {len(wrote[what][k])} as {what}"
                 for k, v in runs.items() for what in ("paid", "failed")
                 if v[what] != len(wrote[what][k])]
    if sum_paid != len(paid):
        problems.append(f"runs count {sum_paid} paid, {len(paid)} invoices are paid")
    if sum_failed != len(failed) + len(given_up):
        problems.append(f"runs count {sum_failed} failed, {len(failed)} invoices failed and "
                        f"{len(given_up)} are uncollectible")
    r.check("every pay run closed, its paid and failed counts exactly the rows it settled; "
            "Σ paid = invoices paid, Σ failed = invoices failed or uncollectible", True,
            f"{len(runs)} runs {dict(run_status)}; Σ paid {sum_paid}, Σ failed {sum_failed}, "
            f"Σ retry_later {sum(v['retry_later'] for v in runs.values())}", problems)

    # Attempts.
    outcomes = collections.Counter(a["outcome"] for a in attempts)
    sent = collections.Counter(a["sent"] for a in attempts)
    retries = collections.Counter()
    charge_of = {c["invoice"]: c["id"] for c in ledger}
    problems = []
    for a in attempts:
        k = a["invoice"]
        v = inv[k]
        parsed = parse_key(a["key"])
        last = v["declines"] - (v["status"] == "uncollectible")
        if a["outcome"] == "started":
            problems.append(f"attempt {a['id']} of {k} left started")
        if parsed is None or parsed[0] != k or parsed[1] > last:
            problems.append(f"attempt {a['id']} of {k} ({v['status']} after {v['declines']} "
                            f"soft declines) used key {a['key']!r}")
        elif parsed[1] > 0:
            retries[parsed[1]] += 1
            due = v["past_due_since"] + DUNNING_OFFSETS[parsed[1] - 1]
            # Both times from invoice-app's clock, in microseconds.
            if a["started"] < due - 1e-6:
                problems.append(f"attempt {a['id']} of {k}, retry {parsed[1]}, started "
                                f"{due - a['started']:.3f}s before it was due")
        if a["run"] not in runs:
            problems.append(f"attempt {a['id']} of {k} names unknown run {a['run']}")
        if a["outcome"] == "succeeded":
            if a["sent"] != "yes" or a["charge_id"] != charge_of.get(k):
                problems.append(f"attempt {a['id']} of {k} succeeded (sent {a['sent']}) with "
                                f"{a['charge_id']}, the ledger says {charge_of.get(k)}")
            if v["status"] != "paid" or v["charge_id"] != a["charge_id"]:
                problems.append(f"{k} had a successful attempt ({a['charge_id']}) but is "
                                f"{v['status']} with {v['charge_id']}")
        if a["outcome"] == "attention":
            problems.append(f"attempt {a['id']} of {k} needed attention")
    r.check("no attempt left started; each under its invoice's key for its attempt count, a "
            "retry never before the schedule made it due; successful attempts carry the "
            "ledger's charge id and their invoice is paid with it; none needed attention", True,
            f"{len(attempts)} attempts {dict(outcomes)}, sent {dict(sent)}; retries "
            f"{dict(sorted(retries.items()))}", problems)

    # The provider never saw these invoices: no attempt may claim an answer about them
    # other than an injected 503 (answered before the key is touched).
    seen = {(parse_key(k["key"]) or ("",))[0] for k in keys} | {c["invoice"] for c in ledger}
    unseen = {k for k in inv if k not in seen}
    problems = [f"attempt {a['id']} of {a['invoice']}: sent=yes, {a['outcome']} "
                f"{a['http_status']}, yet the provider has no key or charge for it"
                for a in attempts if a["invoice"] in unseen and a["sent"] == "yes"
                and not (a["outcome"] == "retryable" and a["http_status"] == 503)
                and not (a["kind"] == "lookup" and a["outcome"] == "not_found")]
    r.check("invoices the provider never saw have no sent attempt other than injected 503s",
            True, f"{len(unseen)} invoices never reached the provider's keys, "
            f"{sum(1 for a in attempts if a['invoice'] in unseen)} attempts for them",
            problems)

    # The audit trail holds every call that was made: whatever the provider did with a key
    # (a charge, a stored answer) comes after an attempt with that key that may have sent.
    # Charges only: a lookup reads a key and must never be what made a charge or an answer.
    first_call = {}
    for a in attempts:
        if a["sent"] != "no" and a["kind"] == "charge":
            first_call.setdefault(a["key"], a["started"])
    problems = [f"ledger row {c['id']} of {c['invoice']} made with no call on record before it"
                for c in ledger if first_call.get(c["key"], float("inf")) > c["created"]]
    problems += [f"key {k['key']} answered with no call on record before it" for k in keys
                 if k["completed"] and first_call.get(k["key"], float("inf")) > k["completed"]]
    lookups = collections.Counter(a["outcome"] for a in attempts if a["kind"] == "lookup")
    r.check("every charge and every answer the provider stored follows a charge call with its "
            "key on record (lookups charge nothing)", True, f"{len(ledger)} charges, "
            f"{sum(1 for k in keys if k['completed'])} stored answers; lookups "
            f"{dict(lookups)}", problems)

    # Calls only under a live claim. A call renews its run's claim for a lease; another run
    # can take the invoice over only once that lapses, or once the first run gave it back
    # (which follows a transient answer: 503, 409, timeout, one needing attention, or a
    # call interrupted when its run failed and handed its claims back), or settled it past
    # due (the next call then has the next key).
    problems = []
    per = collections.defaultdict(list)
    for a in attempts:
        per[a["invoice"]].append(a)
    for k, seq in per.items():
        for a, b in zip(seq, seq[1:]):
            if a["run"] != b["run"] and a["key"] == b["key"] \
                    and b["started"] <= a["started"] + LEASE_SECS \
                    and a["outcome"] not in ("retryable", "unknown", "attention", "interrupted",
                                             "not_found"):
                problems.append(f"{k}: run {b['run']} called {b['started'] - a['started']:.2f}s "
                                f"after run {a['run']}'s call ({a['outcome']}), within its lease")
    for a in attempts:
        run = runs.get(a["run"])
        if run and (a["started"] < run["started"]
                    or (run["finished"] and a["started"] > run["finished"])):
            problems.append(f"attempt {a['id']} of {a['invoice']} outside the life of run {a['run']}")
    r.check("no call without a live claim: no run called an invoice within another run's "
            "lease, or outside its own life", True,
            f"{len(per)} invoices called by "
            f"{sum(1 for seq in per.values() if len({a['run'] for a in seq}) > 1)} "
            "more than one run", problems)
    return r.failed


# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--invoices", type=int, default=4000)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--api-share", type=float, default=0.1,
                        help="share of the invoices created through the API during the chaos")
    parser.add_argument("--freeze", action="store_true",
                        help="also SIGSTOP a replica inside its transactions for longer than "
                        "a lease, then SIGCONT it (finds open defects: see docs/reliability.md)")
    parser.add_argument("--cut-db", action="store_true",
                        help="also terminate every connection to the invoices database once")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases and logs for inspection")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"chaos: seed {seed} (replay: scripts/chaos/chaos.py --seed {seed})", flush=True)
    rng = random.Random(seed)

    if not args.no_build:
        subprocess.run(["cargo", "build", "--locked", "-q", "--bins"], cwd=ROOT, check=True)
    opening, rows, kinds = plan_data(rng, args.customers, args.invoices)
    operator_plan = plan_operator(random.Random(rng.random()), opening, rows, kinds)
    api_rows = rows[int(len(rows) * (1 - args.api_share)):]
    db_rows = rows[:len(rows) - len(api_rows)]
    # A third at the start, the rest in five waves during the chaos.
    first = len(db_rows) // 3
    step = -(-(len(db_rows) - first) // 5)
    waves = [db_rows[:first]] + [db_rows[i:i + step] for i in range(first, len(db_rows), step)]
    latency = rng.randint(20, 50)
    log(f"{len(opening)} accounts ({dict(collections.Counter(kinds.values()))}), "
        f"{len(db_rows)} invoices into the database in {len(waves)} waves and {len(api_rows)} "
        "through the API; "
        f"provider: 10% injected 503s, {latency} ms latency; dunning "
        f"{','.join(f'{o}s' for o in DUNNING_OFFSETS)}, operator: "
        f"{dict(collections.Counter(a for _, a, _, _ in operator_plan))}")

    scratch = tempfile.mkdtemp(prefix="chaos-")
    seed_file = os.path.join(scratch, "accounts.json")
    write_seed(seed_file, opening)
    ia, pp = Database("ia"), Database("pp")
    provider_env = {
        "DATABASE_URL": pp.service_url, "SEED": seed_file,
        "CALLER_TOKENS": f"{CALLER}:{PROVIDER_TOKEN}",
        "FAULT_UNAVAILABLE_RATE": "0.1", "FAULT_LATENCY_MS": str(latency),
        "FAULT_RETRY_AFTER_SECS": "1",
        # Keys cut off by the provider's kill are taken over soon, not after a minute.
        "IDEMPOTENCY_STALE_SECS": "5"}
    cluster = Cluster(scratch, provider_env, {})
    cluster.app_env = {
        "DATABASE_URL": ia.service_url, "PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{cluster.provider_port}",
        "PAYMENT_PROVIDER_TOKEN": PROVIDER_TOKEN, "PAY_SCHEDULE": "off", "DAILY_SCHEDULE": "off", "SEED": "none",
        "PAY_CONCURRENCY": str(PAY_CONCURRENCY), "CLAIM_LEASE_SECS": str(LEASE_SECS),
        # Enough connections that the rest goes on while calls and settlements wait behind
        # locked rows: PAY_MAX_RUNS × (PAY_CONCURRENCY + claim, settle, heartbeat).
        "PAY_MAX_RUNS": str(PAY_MAX_RUNS), "DATABASE_POOL_SIZE": str(POOL_SIZE),
        "RETRY_MAX_ELAPSED_SECS": str(BUDGET_SECS), "CHARGE_TIMEOUT_MS": str(TIMEOUT_MS),
        "DUNNING_SCHEDULE": ",".join(f"{o}s" for o in DUNNING_OFFSETS)}
    operator = Operator({"DATABASE_URL": pp.service_url}, operator_plan,
                        {c: cur for c, (cur, _) in opening.items()})
    failed = ["the run did not finish"]
    try:
        cluster.start_provider()  # creates the accounts
        cluster.start_app(0)  # migrates the invoices database
        for i in range(1, REPLICAS):
            cluster.start_app(i)
        operator.before_first_run()  # runs start with the chaos
        log(f"payment-provider and {REPLICAS} invoice-apps up; chaos for {CHAOS_SECS}s")
        console = threading.Thread(target=operator.run, daemon=True)
        console.start()
        chaos(cluster, ia, rng, waves, api_rows, args.freeze, args.cut_db)
        log(f"chaos over: {status_counts(ia)}; paying until nothing is pending, processing "
            "or past due")
        stuck = drain(cluster, ia, rng)
        console.join()
        probes = probe_keys(cluster.provider.url, ia, rng)
        cluster.stop()
        log("all stopped")
        failed = check_invariants(ia, pp, opening, operator.done, probes)
        done = [summary for _, summary in cluster.reconciles if summary]
        print(f"  invoice-app reconcile ran {len(cluster.reconciles)} times, exits "
              f"{dict(collections.Counter(code for code, _ in cluster.reconciles))}: "
              f"{sum(d['paid'] for d in done)} paid, {sum(d['failed'] for d in done)} failed, "
              f"{sum(d['retry_later'] for d in done)} handed back")
        for problem in ([stuck] if stuck else []) + cluster.errors + operator.errors:
            print(f"  FAIL  {problem}")
            failed.append(problem)
    finally:
        cluster.kill_everything()
        if failed:
            print(f"chaos: FAILED ({len(failed)}) with seed {seed}: replay with "
                  f"scripts/chaos/chaos.py --seed {seed}; logs in {scratch}", file=sys.stderr)
        if args.keep:
            print(f"chaos: kept databases {ia.name}, {pp.name} and {scratch}")
        else:
            ia.drop()
            pp.drop()
            if not failed:
                shutil.rmtree(scratch, ignore_errors=True)
    log(f"chaos: all invariants hold (seed {seed})" if not failed else "chaos: red")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
