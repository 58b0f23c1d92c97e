#!/usr/bin/env python3
"""Assertions over the connectivity map that network-config-analyzer (nca) computed.

Usage:
  check_netpol.py isolate DIR {ingress,egress}
      Rewrite the NetworkPolicies in DIR to keep one direction only, so that each side
      of a connection is checked on its own (a widened ingress rule must not hide behind
      the caller's tight egress rule, and the other way round).
  check_netpol.py assert CONNECTIVITY.txt --mode {full,ingress,egress}
                  [--invoices-db] [--payments-db] [--monitoring] [--cronjob {pay-run,daily-run}]...
                  [--way-in {gateway,ingress}]... [--api-server NODE]... [--api-server-ports P,P]
                  [--idp NODE=CONNECTIONS]...

CONNECTIVITY.txt is the output of
    nca --connectivity -r DIR -o txt_no_fw_rules
over the rendered team-namespace (invoices, payments), both app charts (releases named
invoice-app and payment-provider, and a second invoice-app release named canary), both
team-database releases (invoices-db, payments-db, with the chart's ci values) and
scripts/charts/fixtures/netpol-world.yaml. Each line reads `SRC => DST : CONNECTIONS`; a
pair that is missing is denied.

In full mode the issue's questions come first, one by one. In every mode the whole map of
connections into (ingress mode) and/or out of (egress mode) the two team namespaces must
equal the expected one, so any widening shows up.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

OUTSIDE = "0.0.0.0-255.255.255.255"
INGRESS = "ingress-nginx/ingress-nginx-controller[Pod]"
GATEWAY = "gateway-system/envoy-public[Pod]"  # the Gateway's proxy
GATEWAY_OTHER = "gateway-system/gateway-controller[Pod]"  # not a proxy
DNS = "kube-system/coredns[Pod]"
PROMETHEUS = "monitoring/prometheus[Pod]"
GRAFANA = "monitoring/grafana[Pod]"  # in the monitoring namespace, not Prometheus
BYSTANDER = "unrelated/bystander[Pod]"
IMPOSTOR = "unrelated/impostor[Pod]"  # wears invoice-app's label in the wrong namespace
INVOICES_INTRUDER = "invoices/intruder[Pod]"
PAYMENTS_INTRUDER = "payments/intruder[Pod]"
PAYMENTS_IMPOSTOR = "payments/impostor[Pod]"  # invoice-app's label, in the provider's namespace
INTRUDERS = [INVOICES_INTRUDER, PAYMENTS_INTRUDER, PAYMENTS_IMPOSTOR]
LABEL_THIEF = "invoices/label-thief[Pod]"  # every label of invoice-app's serving pods, in invoices
INVOICE_APP = "invoices/invoice-app[Deployment]"
INVOICE_TEST = "invoices/invoice-app-test-readyz[Pod]"
CANARY = "invoices/canary-invoice-app[Deployment]"  # a second invoice-app release
CANARY_TEST = "invoices/canary-invoice-app-test-readyz[Pod]"
# The helm tests that call payment-provider: one wears invoice-app's labels (the way the app
# goes), one does not (must be kept out by payment-provider's policy alone).
PROVIDER_PATH_TESTS = ["invoices/invoice-app-test-provider[Pod]", "invoices/canary-invoice-app-test-provider[Pod]"]
ISOLATION_TESTS = ["invoices/invoice-app-test-isolation[Pod]", "invoices/canary-invoice-app-test-isolation[Pod]"]
INVOICES_DB = "invoices/invoices-db-1[Pod]"
PROVIDER = "payments/payment-provider[Deployment]"
PROVIDER_TEST = "payments/payment-provider-test-readyz[Pod]"
PROVIDER_AUTH_TEST = "payments/payment-provider-test-auth[Pod]"
PAYMENTS_DB = "payments/payments-db-1[Pod]"
DATABASES = [INVOICES_DB, PAYMENTS_DB]
CNPG_OPERATOR = "cnpg-system/cnpg-operator[Pod]"
CNPG_NEIGHBOUR = "cnpg-system/cnpg-neighbour[Pod]"  # in the operator's namespace, not the operator
CNPG_LOOKALIKE = "unrelated/operator-lookalike[Pod]"  # the operator's labels, in another namespace

HTTP = "{protocols:TCP,dst_ports:8080}"
METRICS = "{protocols:TCP,dst_ports:9090}"
POSTGRES = "{protocols:TCP,dst_ports:5432}"
DNS_PORTS = "{protocols:TCP, UDP,dst_ports:53}"
CNPG_PORTS = "{protocols:TCP,dst_ports:5432,8000}"  # PostgreSQL and the instance manager's status
# The API server as charts/team-database/ci/*-values.yaml name it (apiServer.cidrs, ports).
DB_API_SERVER = {node: "{protocols:TCP,dst_ports:443,6443}" for node in ("10.96.0.1", "172.18.0.2")}
DENIED = None
CRONJOBS = ("pay-run", "daily-run")  # the app's runs as CronJobs, by component


def cronjob(release: str, component: str) -> str:
    """nca's name of a release's CronJob (its pods wear the app's labels and the component)."""
    return f"invoices/{release}-{component}[CronJob]"

LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conn>.+)$")


def parse(path: str) -> dict[tuple[str, str], str]:
    conns = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = LINE.match(line.strip())
            if m:
                conns[(m["src"], m["dst"])] = m["conn"].strip()
    if not conns:
        sys.exit(f"{path}: no connections parsed; did nca change its output format?")
    return conns


def isolate(directory: str, keep: str) -> None:
    """Keep only the `keep` direction ("ingress" or "egress") of every NetworkPolicy."""
    drop = "Egress" if keep == "ingress" else "Ingress"
    for path in Path(directory).glob("*.yaml"):
        docs = []
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "NetworkPolicy":
                spec = doc["spec"]
                types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
                types = [t for t in types if t != drop]
                spec.pop(drop.lower(), None)
                if not types:
                    continue
                spec["policyTypes"] = types
            if doc:
                docs.append(doc)
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")


class World:
    """Which pods exist and what they are, for one value set."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # (server, helm test pod) of each invoice-app release, and the CronJobs that are on.
        self.releases = [(INVOICE_APP, INVOICE_TEST), (CANARY, CANARY_TEST)]
        self.runs = [cronjob(release, c) for release in ("invoice-app", "canary-invoice-app") for c in args.cronjob]
        # Pods that the invoice-app policies select: each release's serving pods, and the label
        # thief, which the first release's policy cannot tell from its own pods.
        self.servers = [INVOICE_APP, LABEL_THIEF, CANARY]
        self.callers = self.servers + self.runs  # every pod with invoice-app's egress
        self.team_pods = (self.callers + [PROVIDER, INVOICE_TEST, CANARY_TEST, PROVIDER_TEST, PROVIDER_AUTH_TEST,
                                          INVOICES_DB, PAYMENTS_DB] + INTRUDERS + PROVIDER_PATH_TESTS
                          + ISOLATION_TESTS)
        self.ways_in = {"gateway": GATEWAY, "ingress": INGRESS}
        ports = ",".join(args.api_server_ports.split(","))
        self.api_server = {node: f"{{protocols:TCP,dst_ports:{ports}}}" for node in args.api_server}
        self.idp = dict(item.split("=", 1) for item in args.idp)

    def test_targets(self, test: str) -> list[str]:
        """The serving pods a release's helm test pod reaches: its own release's."""
        return [INVOICE_APP, LABEL_THIEF] if test == INVOICE_TEST else [CANARY]

    def expected(self, mode: str) -> dict[tuple[str, str], str]:
        """The allowed connections that touch the team namespaces, for one mode."""
        a = self.args
        calls = {(c, PROVIDER): HTTP for c in self.callers}
        calls[(PROVIDER_TEST, PROVIDER)] = HTTP
        calls[(PROVIDER_AUTH_TEST, PROVIDER)] = HTTP
        calls.update({(t, PROVIDER): HTTP for t in PROVIDER_PATH_TESTS})
        # The isolation test's own policy lets it out; payment-provider's keeps it out.
        isolation_out = {(t, PROVIDER): HTTP for t in ISOLATION_TESTS}
        for _, test in self.releases:
            calls.update({(test, t): HTTP for t in self.test_targets(test)})
        ways_in = {(self.ways_in[w], s): HTTP for w in a.way_in for s in self.servers}
        scrape = {}
        if a.monitoring:
            scrape = {(PROMETHEUS, t): METRICS for t in self.servers + [PROVIDER]}
        # The database fixtures admit their app's label whatever database the app uses.
        db_ingress = {(c, INVOICES_DB): POSTGRES for c in self.callers + PROVIDER_PATH_TESTS}
        db_ingress[(PROVIDER, PAYMENTS_DB)] = POSTGRES
        db_ingress.update({(CNPG_OPERATOR, db): CNPG_PORTS for db in DATABASES})
        db_egress = {(c, INVOICES_DB): POSTGRES for c in self.callers} if a.invoices_db else {}
        if a.payments_db:
            db_egress[(PROVIDER, PAYMENTS_DB)] = POSTGRES
        dns = {(pod, DNS): DNS_PORTS for pod in self.team_pods}
        outbound = {(PROVIDER, node): conn for node, conn in self.api_server.items()}
        outbound.update({(db, node): conn for node, conn in DB_API_SERVER.items() for db in DATABASES})
        outbound.update({(c, node): conn for node, conn in self.idp.items() for c in self.callers})

        # The operator's namespace has no policy: only the databases' ingress rules hold it back.
        operator = {(CNPG_OPERATOR, db): CNPG_PORTS for db in DATABASES}

        if mode == "ingress":  # what the team pods admit; every caller's egress is open
            return {**ways_in, **calls, **db_ingress, **scrape}
        if mode == "egress":  # what the team pods may reach; every destination is open
            return {**calls, **isolation_out, **db_egress, **dns, **outbound}
        return {**ways_in, **calls, **db_egress, **scrape, **dns, **outbound, **operator}


def in_scope(mode: str, pair: tuple[str, str]) -> bool:
    src_team, dst_team = (end.startswith(("invoices/", "payments/")) for end in pair)
    return {"ingress": dst_team, "egress": src_team}.get(mode, src_team or dst_team)


def check(args: argparse.Namespace) -> int:
    conns = parse(args.connectivity)
    world = World(args)
    failures = 0

    def expect(src: str, dst: str, want: str | None, why: str) -> None:
        nonlocal failures
        got = conns.get((src, dst))
        if got == want:
            print(f"  ok   {why}: {got or 'denied'}")
        else:
            failures += 1
            print(f"  FAIL {why}: expected {want or 'denied'}, nca computed {got or 'denied'}")

    print(f"NetworkPolicy reachability (nca, {args.mode}):")
    if args.mode == "full":
        gateway, ingress = "gateway" in args.way_in, "ingress" in args.way_in
        expect(OUTSIDE, PROVIDER, DENIED, "outside the cluster -> payment-provider")
        expect(BYSTANDER, PROVIDER, DENIED, "unrelated namespace -> payment-provider")
        expect(IMPOSTOR, PROVIDER, DENIED, "pod labelled invoice-app in another namespace -> payment-provider")
        expect(INGRESS, PROVIDER, DENIED, "ingress controller -> payment-provider")
        expect(GATEWAY, PROVIDER, DENIED, "Gateway proxy -> payment-provider")
        expect(INVOICE_APP, PROVIDER, HTTP, "invoice-app -> payment-provider, port 8080 only")
        for component in CRONJOBS:
            run = cronjob("invoice-app", component)
            on = component in args.cronjob
            expect(run, PROVIDER, HTTP if on else DENIED,
                   f"invoice-app {component} -> payment-provider, port 8080 only" if on
                   else f"no {component} CronJob: no such pod")
            if on:
                expect(run, INVOICES_DB, POSTGRES if args.invoices_db else DENIED,
                       f"invoice-app {component} -> its PostgreSQL")
                expect(INVOICE_APP, run, DENIED, f"invoice-app -> its {component} pods: they accept nothing")
                expect(run, OUTSIDE, DENIED, f"invoice-app {component} -> the internet")
        expect(LABEL_THIEF, PROVIDER, HTTP,
               "a pod wearing all of invoice-app's labels in invoices -> payment-provider: the port is "
               "open to it (labels are not an identity); payment-provider refuses its calls by workload "
               "identity (its ServiceAccount is not invoice-app's), and team-namespace's label policy "
               "refuses to admit such a pod")
        expect(CANARY, PROVIDER, HTTP,
               "a second invoice-app release (canary) -> payment-provider: the port is open to it; its "
               "calls are refused by workload identity until payment-provider lists its ServiceAccount, "
               "and its pods are refused by the label policy until the team allows that ServiceAccount")
        expect(INGRESS, INVOICE_APP, HTTP if ingress else DENIED,
               f"ingress controller -> invoice-app ({'Ingress on' if ingress else 'no Ingress'})")
        expect(GATEWAY, INVOICE_APP, HTTP if gateway else DENIED,
               f"Gateway proxy -> invoice-app ({'HTTPRoute on' if gateway else 'no HTTPRoute'})")
        expect(GATEWAY_OTHER, INVOICE_APP, DENIED, "a gateway-system pod that is not a proxy -> invoice-app")
        expect(BYSTANDER, INVOICE_APP, DENIED, "unrelated pod -> invoice-app")
        expect(OUTSIDE, INVOICE_APP, DENIED, "outside the cluster -> invoice-app, bypassing the way in")
        expect(PROVIDER, INVOICE_APP, DENIED, "payment-provider -> invoice-app")
        expect(INVOICE_APP, OUTSIDE, DENIED, "invoice-app -> the internet")
        expect(PROVIDER, OUTSIDE, DENIED, "payment-provider -> the internet")
        for node, conn in world.api_server.items():
            expect(PROVIDER, node, conn, f"payment-provider -> the API server at {node} (JWKS)")
        for node, conn in world.idp.items():
            expect(INVOICE_APP, node, conn, f"invoice-app -> the identity provider at {node} (JWKS)")
        expect(INVOICE_APP, BYSTANDER, DENIED, "invoice-app -> unrelated pod")
        expect(INVOICE_APP, DNS, DNS_PORTS, "invoice-app -> cluster DNS, port 53 only")
        expect(PROVIDER, DNS, DNS_PORTS, "payment-provider -> cluster DNS, port 53 only")
        expect(INVOICE_APP, INVOICES_DB, POSTGRES if args.invoices_db else DENIED, "invoice-app -> its PostgreSQL")
        expect(INVOICE_APP, PAYMENTS_DB, DENIED, "invoice-app -> payment-provider's PostgreSQL")
        expect(PROVIDER, PAYMENTS_DB, POSTGRES if args.payments_db else DENIED, "payment-provider -> its PostgreSQL")
        expect(PROVIDER, INVOICES_DB, DENIED, "payment-provider -> invoice-app's PostgreSQL")
        for db in DATABASES:
            expect(CNPG_OPERATOR, db, CNPG_PORTS, f"CloudNativePG operator -> {db}: PostgreSQL and status only")
            expect(CNPG_NEIGHBOUR, db, DENIED, f"another pod of the operator's namespace -> {db}")
            expect(CNPG_LOOKALIKE, db, DENIED, f"a pod with the operator's labels in another namespace -> {db}")
            expect(BYSTANDER, db, DENIED, f"unrelated pod -> {db}")
            expect(db, OUTSIDE, DENIED, f"{db} -> the internet")
            for node, conn in DB_API_SERVER.items():
                expect(db, node, conn, f"{db} -> the API server at {node} (instance manager)")
        expect(INVOICES_DB, PAYMENTS_DB, DENIED, "invoices' PostgreSQL -> payments' PostgreSQL")
        expect(PAYMENTS_DB, INVOICES_DB, DENIED, "payments' PostgreSQL -> invoices' PostgreSQL")
        for target in (PROVIDER, INVOICE_APP):
            expect(PROMETHEUS, target, METRICS if args.monitoring else DENIED,
                   f"Prometheus -> {target}: the metrics port only, never the API")
            expect(GRAFANA, target, DENIED, f"another pod of the monitoring namespace -> {target}")
        expect(INVOICE_TEST, INVOICE_APP, HTTP, "invoice-app's helm test pod -> invoice-app")
        expect(INVOICE_TEST, CANARY, DENIED, "invoice-app's helm test pod -> the other release")
        expect(CANARY_TEST, INVOICE_APP, DENIED, "the other release's helm test pod -> invoice-app")
        expect(INVOICE_APP, CANARY, DENIED, "invoice-app -> the other release")
        for intruder in INTRUDERS:
            for target in (PROVIDER, INVOICE_APP, INVOICES_DB, PAYMENTS_DB):
                expect(intruder, target, DENIED, f"{intruder} -> {target}")
            expect(intruder, OUTSIDE, DENIED, f"{intruder} -> the internet")
        expect(PROVIDER_TEST, PROVIDER, HTTP, "payment-provider's helm test pod -> payment-provider")
        expect(PROVIDER_AUTH_TEST, PROVIDER, HTTP, "payment-provider's auth helm test pod -> payment-provider")
        for test in PROVIDER_PATH_TESTS:
            expect(test, PROVIDER, HTTP, f"{test} (invoice-app's labels) -> payment-provider, the app's way")
            for target in (INVOICE_APP, INVOICES_DB, PAYMENTS_DB):
                expect(test, target, DENIED, f"{test} -> {target}")
            expect(test, OUTSIDE, DENIED, f"{test} -> the internet")
        for test in ISOLATION_TESTS:
            expect(test, PROVIDER, DENIED, f"{test} (not invoice-app) -> payment-provider: kept out")
    if args.mode == "egress":
        for test in ISOLATION_TESTS:
            expect(test, PROVIDER, HTTP, f"{test} may go out to payment-provider: only its policy keeps it out")

    # The whole map in scope, nothing more and nothing less.
    expected = world.expected(args.mode)
    actual = {pair: conn for pair, conn in conns.items() if in_scope(args.mode, pair)}
    extra = {p: c for p, c in actual.items() if expected.get(p) != c}
    missing = {p: c for p, c in expected.items() if actual.get(p) != c and p not in extra}
    for (src, dst), conn in sorted(extra.items()):
        failures += 1
        print(f"  FAIL unexpected: {src} => {dst} : {conn}")
    for (src, dst), conn in sorted(missing.items()):
        failures += 1
        print(f"  FAIL missing: {src} => {dst} : {conn}")
    if not extra and not missing:
        scope = {"full": "into and out of", "ingress": "into", "egress": "out of"}[args.mode]
        print(f"  ok   the {len(actual)} connections {scope} invoices/payments are exactly the expected ones")

    if failures:
        print(f"NetworkPolicy check ({args.mode}): {failures} failure(s)")
        return 1
    print(f"NetworkPolicy check ({args.mode}): all assertions hold")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    iso = sub.add_parser("isolate")
    iso.add_argument("directory")
    iso.add_argument("keep", choices=["ingress", "egress"])
    chk = sub.add_parser("assert")
    chk.add_argument("connectivity")
    chk.add_argument("--mode", choices=["full", "ingress", "egress"], default="full")
    chk.add_argument("--invoices-db", action="store_true",
                     help="invoice-app's PostgreSQL is the invoices-db fixture")
    chk.add_argument("--payments-db", action="store_true",
                     help="payment-provider's PostgreSQL is the payments-db fixture")
    chk.add_argument("--monitoring", action="store_true",
                     help="networkPolicy.prometheus names the Prometheus pods in both apps")
    chk.add_argument("--cronjob", action="append", default=[], choices=CRONJOBS,
                     help="this CronJob of invoice-app is on (pay-run, daily-run)")
    chk.add_argument("--way-in", action="append", default=[], choices=["gateway", "ingress"],
                     help="invoice-app's HTTPRoute (gateway) or Ingress is on")
    chk.add_argument("--api-server", action="append", default=[],
                     help="nca's name of an API server address payment-provider reaches")
    chk.add_argument("--api-server-ports", default="443,6443")
    chk.add_argument("--idp", action="append", default=[],
                     help="NODE=CONNECTIONS: invoice-app's identity provider, as nca names it")
    args = parser.parse_args()
    if args.command == "isolate":
        isolate(args.directory, args.keep)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
