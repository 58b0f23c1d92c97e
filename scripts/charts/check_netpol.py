#!/usr/bin/env python3
"""Assertions over the connectivity map that network-config-analyzer (nca) computed.

Usage:
  check_netpol.py isolate DIR {ingress,egress}
      Rewrite the NetworkPolicies in DIR to keep one direction only, so that each side
      of a connection is checked on its own (a widened ingress rule must not hide behind
      the caller's tight egress rule, and the other way round).
  check_netpol.py assert CONNECTIVITY.txt --mode {full,ingress,egress}
                  --database {postgres,sqlite} [--monitoring] [--cronjob]

CONNECTIVITY.txt is the output of
    nca --connectivity -r DIR -o txt_no_fw_rules
over the rendered team-namespace (invoices, payments), both app charts (releases named
invoice-app and payment-provider) and scripts/charts/fixtures/netpol-world.yaml. Each
line reads `SRC => DST : CONNECTIONS`; a pair that is missing is denied.

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
DNS = "kube-system/coredns[Pod]"
PROMETHEUS = "monitoring/prometheus[Pod]"
BYSTANDER = "unrelated/bystander[Pod]"
IMPOSTOR = "unrelated/impostor[Pod]"  # wears invoice-app's label in the wrong namespace
INVOICES_INTRUDER = "invoices/intruder[Pod]"
PAYMENTS_INTRUDER = "payments/intruder[Pod]"
PAYMENTS_IMPOSTOR = "payments/impostor[Pod]"  # invoice-app's label, in the provider's namespace
INTRUDERS = [INVOICES_INTRUDER, PAYMENTS_INTRUDER, PAYMENTS_IMPOSTOR]
INVOICE_APP = "invoices/invoice-app[Deployment]"
PAY_RUN = "invoices/invoice-app-pay-run[CronJob]"
INVOICE_TEST = "invoices/invoice-app-test-readyz[Pod]"
INVOICES_DB = "invoices/invoices-db-1[Pod]"
PROVIDER = "payments/payment-provider[Deployment]"
PROVIDER_TEST = "payments/payment-provider-test-readyz[Pod]"
PAYMENTS_DB = "payments/payments-db-1[Pod]"

HTTP = "{protocols:TCP,dst_ports:8080}"
POSTGRES = "{protocols:TCP,dst_ports:5432}"
DNS_PORTS = "{protocols:TCP, UDP,dst_ports:53}"
DENIED = None

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


def expected_map(mode: str, pg: bool, monitoring: bool, cronjob: bool) -> dict[tuple[str, str], str]:
    """The allowed connections that touch the team namespaces, for one mode."""
    app_pods = [INVOICE_APP, PROVIDER] + ([PAY_RUN] if cronjob else [])
    team_pods = app_pods + [INVOICE_TEST, PROVIDER_TEST, INVOICES_DB, PAYMENTS_DB] + INTRUDERS
    calls = {
        (INVOICE_APP, PROVIDER): HTTP,
        (INVOICE_TEST, INVOICE_APP): HTTP,
        (PROVIDER_TEST, PROVIDER): HTTP,
    }
    if cronjob:
        calls[(PAY_RUN, PROVIDER)] = HTTP
    db = {(INVOICE_APP, INVOICES_DB): POSTGRES, (PROVIDER, PAYMENTS_DB): POSTGRES}
    if cronjob:
        db[(PAY_RUN, INVOICES_DB)] = POSTGRES
    scrape = {(PROMETHEUS, INVOICE_APP): HTTP, (PROMETHEUS, PROVIDER): HTTP} if monitoring else {}
    dns = {(pod, DNS): DNS_PORTS for pod in team_pods}

    if mode == "ingress":  # what the team pods admit; every caller's egress is open
        # The database fixtures admit their app whatever database the app uses.
        return {(INGRESS, INVOICE_APP): HTTP, **calls, **db, **scrape}
    if mode == "egress":  # what the team pods may reach; every destination is open
        return {**calls, **(db if pg else {}), **dns}
    return {(INGRESS, INVOICE_APP): HTTP, **calls, **(db if pg else {}), **scrape, **dns}


def in_scope(mode: str, pair: tuple[str, str]) -> bool:
    src_team, dst_team = (end.startswith(("invoices/", "payments/")) for end in pair)
    return {"ingress": dst_team, "egress": src_team}.get(mode, src_team or dst_team)


def check(args: argparse.Namespace) -> int:
    conns = parse(args.connectivity)
    pg = args.database == "postgres"
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
        expect(OUTSIDE, PROVIDER, DENIED, "outside the cluster -> payment-provider")
        expect(BYSTANDER, PROVIDER, DENIED, "unrelated namespace -> payment-provider")
        expect(IMPOSTOR, PROVIDER, DENIED, "pod labelled invoice-app in another namespace -> payment-provider")
        expect(INGRESS, PROVIDER, DENIED, "ingress controller -> payment-provider")
        expect(INVOICE_APP, PROVIDER, HTTP, "invoice-app -> payment-provider, port 8080 only")
        if args.cronjob:
            expect(PAY_RUN, PROVIDER, HTTP, "invoice-app pay run -> payment-provider, port 8080 only")
        expect(INGRESS, INVOICE_APP, HTTP, "ingress controller -> invoice-app, port 8080 only")
        expect(BYSTANDER, INVOICE_APP, DENIED, "unrelated pod -> invoice-app")
        expect(OUTSIDE, INVOICE_APP, DENIED, "outside the cluster -> invoice-app, bypassing the ingress")
        expect(PROVIDER, INVOICE_APP, DENIED, "payment-provider -> invoice-app")
        expect(INVOICE_APP, OUTSIDE, DENIED, "invoice-app -> the internet")
        expect(PROVIDER, OUTSIDE, DENIED, "payment-provider -> the internet")
        expect(INVOICE_APP, BYSTANDER, DENIED, "invoice-app -> unrelated pod")
        expect(INVOICE_APP, DNS, DNS_PORTS, "invoice-app -> cluster DNS, port 53 only")
        expect(PROVIDER, DNS, DNS_PORTS, "payment-provider -> cluster DNS, port 53 only")
        expect(INVOICE_APP, INVOICES_DB, POSTGRES if pg else DENIED, "invoice-app -> its PostgreSQL")
        expect(INVOICE_APP, PAYMENTS_DB, DENIED, "invoice-app -> payment-provider's PostgreSQL")
        expect(PROVIDER, PAYMENTS_DB, POSTGRES if pg else DENIED, "payment-provider -> its PostgreSQL")
        expect(PROVIDER, INVOICES_DB, DENIED, "payment-provider -> invoice-app's PostgreSQL")
        expect(PROMETHEUS, PROVIDER, HTTP if args.monitoring else DENIED, "monitoring -> payment-provider")
        expect(PROMETHEUS, INVOICE_APP, HTTP if args.monitoring else DENIED, "monitoring -> invoice-app")
        expect(INVOICE_TEST, INVOICE_APP, HTTP, "invoice-app's helm test pod -> invoice-app")
        for intruder in INTRUDERS:
            for target in (PROVIDER, INVOICE_APP, INVOICES_DB, PAYMENTS_DB):
                expect(intruder, target, DENIED, f"{intruder} -> {target}")
            expect(intruder, OUTSIDE, DENIED, f"{intruder} -> the internet")
        expect(PROVIDER_TEST, PROVIDER, HTTP, "payment-provider's helm test pod -> payment-provider")

    # The whole map in scope, nothing more and nothing less.
    expected = expected_map(args.mode, pg, args.monitoring, args.cronjob)
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
    chk.add_argument("--database", choices=["postgres", "sqlite"], required=True)
    chk.add_argument("--monitoring", action="store_true",
                     help="monitoringNamespace=monitoring is set in both apps")
    chk.add_argument("--cronjob", action="store_true", help="the pay-run CronJob is on")
    args = parser.parse_args()
    if args.command == "isolate":
        isolate(args.directory, args.keep)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
