#!/usr/bin/env python3
"""What the app charts expose, asserted over their rendered value sets.

Usage: check_exposure.py CHARTS_DIR RENDERED_DIR...

Each RENDERED_DIR holds `<set>.yaml`, the chart `<dir name>` rendered with
CHARTS_DIR/<chart>/ci/<set>-values.yaml. Asserts:
  * no well-known credential (the dev token, the dev API key, or the SHA-256 of either) in
    any render, `demo: true` included (its helm tests aside, which send one to see it
    refused): the binaries refuse them off loopback, and a pod listens on 0.0.0.0;
  * payment-provider renders no Ingress or HTTPRoute; invoice-app's Ingress rules and
    HTTPRoutes name their hosts (no wildcard) and route /invoices and /pay-runs alone;
  * metrics on their own port: container ports `http` 8080 and `metrics` 9090,
    METRICS_ADDR on the metrics port, a Service port `metrics`, the ServiceMonitor on it,
    probes on `http`, and no NetworkPolicy rule that admits both ports at once;
  * invoice-app presents a credential to payment-provider: a projected ServiceAccount token
    (audience payment-provider, short-lived) unless its value set configures a static token.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import yaml

WELL_KNOWN = ["dev-only-insecure-token", "dev-only-insecure-api-key"]
SECRETS = WELL_KNOWN + [hashlib.sha256(w.encode()).hexdigest() for w in WELL_KNOWN]
API_PATHS = {"/invoices", "/pay-runs"}
HTTP_PORT, METRICS_PORT = 8080, 9090

failures = 0


def fail(msg: str) -> None:
    global failures
    failures += 1
    print(f"  FAIL {msg}")


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def is_test_hook(doc: dict) -> bool:
    return (doc.get("metadata", {}).get("annotations") or {}).get("helm.sh/hook") == "test"


def check_credentials(where: str, text: str) -> None:
    found = [s for s in SECRETS if s in text]
    if found:
        fail(f"{where}: a well-known credential, which the binaries refuse off loopback ({found[0][:24]}...)")


def check_routes(where: str, chart: str, docs: list[dict]) -> None:
    ingresses, routes = of_kind(docs, "Ingress"), of_kind(docs, "HTTPRoute")
    if chart == "payment-provider":
        if ingresses or routes:
            fail(f"{where}: payment-provider must not be routed from outside")
        return
    for ing in ingresses:
        for rule in ing["spec"].get("rules") or []:
            host = rule.get("host", "")
            if not host or "*" in host:
                fail(f"{where}: Ingress rule without a precise host ({host or 'none'})")
            paths = {(p["path"], p["pathType"]) for p in rule["http"]["paths"]}
            if paths != {(p, "Prefix") for p in API_PATHS}:
                fail(f"{where}: Ingress routes {sorted(paths)}, not the API paths alone")
        if ing["spec"].get("defaultBackend"):
            fail(f"{where}: Ingress with a default backend")
    for route in routes:
        hosts = route["spec"].get("hostnames") or []
        if not hosts or any("*" in h for h in hosts):
            fail(f"{where}: HTTPRoute without precise hostnames ({hosts})")
        for rule in route["spec"]["rules"]:
            matches = {(m["path"]["type"], m["path"]["value"]) for m in rule.get("matches") or []}
            if matches != {("PathPrefix", p) for p in API_PATHS}:
                fail(f"{where}: HTTPRoute matches {sorted(matches)}, not the API paths alone")
    if ingresses or routes:
        print(f"  ok   {where}: {len(ingresses)} Ingress, {len(routes)} HTTPRoute; named hosts, "
              "/invoices and /pay-runs only")


def check_metrics(where: str, docs: list[dict]) -> None:
    config = {}
    for cm in of_kind(docs, "ConfigMap"):
        config.update(cm.get("data") or {})
    if config.get("METRICS_ADDR") != f"0.0.0.0:{METRICS_PORT}":
        fail(f"{where}: METRICS_ADDR is {config.get('METRICS_ADDR')}, not 0.0.0.0:{METRICS_PORT}")
    if config.get("LISTEN_ADDR") != f"0.0.0.0:{HTTP_PORT}":
        fail(f"{where}: LISTEN_ADDR is {config.get('LISTEN_ADDR')}")
    for dep in of_kind(docs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
            if ports != {"http": HTTP_PORT, "metrics": METRICS_PORT}:
                fail(f"{where}: container {c['name']} ports {ports}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if c.get(probe, {}).get("httpGet", {}).get("port") != "http":
                    fail(f"{where}: {probe} of {c['name']} is not on the http port")
    for svc in of_kind(docs, "Service"):
        ports = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
        if ports != {"http": "http", "metrics": "metrics"}:
            fail(f"{where}: Service ports {ports}")
    for sm in of_kind(docs, "ServiceMonitor"):
        if [e.get("port") for e in sm["spec"]["endpoints"]] != ["metrics"]:
            fail(f"{where}: ServiceMonitor does not scrape the metrics port alone")
    for np in of_kind(docs, "NetworkPolicy"):
        for rule in np["spec"].get("ingress") or []:
            ports = {p.get("port") for p in rule.get("ports") or []}
            if {HTTP_PORT, METRICS_PORT} <= ports:
                fail(f"{where}: NetworkPolicy {np['metadata']['name']} admits the API and metrics ports in one rule")
            if METRICS_PORT in ports:
                for peer in rule.get("from") or []:
                    if not (peer.get("namespaceSelector") and peer.get("podSelector")):
                        fail(f"{where}: the metrics port admits a peer without namespace and pod selectors")


def check_provider_credential(where: str, docs: list[dict], values: dict) -> None:
    static = (values.get("paymentProvider") or {}).get("serviceAccountToken", {}).get("enabled") is False
    for name, spec in pod_specs(docs):
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env") or []}
        token_file = env.get("PAYMENT_PROVIDER_TOKEN_FILE")
        sources = [s for v in spec.get("volumes") or [] for s in (v.get("projected") or {}).get("sources") or []]
        projected = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{where}: {name} automounts an API token")
        # Always a credential: without one invoice-app refuses to start off loopback.
        if not token_file or not token_file.endswith("/payment-provider-token"):
            fail(f"{where}: {name} has no PAYMENT_PROVIDER_TOKEN_FILE")
        elif static:
            if projected:
                fail(f"{where}: {name} mounts a ServiceAccount token although a static one is configured")
            else:
                print(f"  ok   {where}: {name} presents a static token from a Secret")
        elif len(projected) != 1 or projected[0].get("audience") != "payment-provider" \
                or projected[0].get("path") != "payment-provider-token" \
                or not 600 <= projected[0].get("expirationSeconds", 0) <= 3600:
            fail(f"{where}: {name} does not mount a short-lived projected token for payment-provider: {projected}")
        else:
            print(f"  ok   {where}: {name} presents a projected ServiceAccount token "
                  f"(audience payment-provider, {projected[0]['expirationSeconds']} s)")


def main(argv: list[str]) -> int:
    charts = Path(argv[0])
    print("What the charts expose:")
    for rendered in map(Path, argv[1:]):
        chart = rendered.name
        for path in sorted(rendered.glob("*.yaml")):
            values_file = charts / chart / "ci" / f"{path.stem}-values.yaml"
            values = yaml.safe_load(values_file.read_text(encoding="utf-8")) or {}
            text = path.read_text(encoding="utf-8")
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
            where = f"{chart} ({path.stem})"
            before = failures
            # A helm test may send a well-known credential to prove it is refused; what counts is
            # what the release itself is configured with.
            configured = yaml.safe_dump_all([d for d in docs if not is_test_hook(d)])
            check_credentials(where, configured)
            check_routes(where, chart, docs)
            check_metrics(where, docs)
            if chart == "invoice-app":
                check_provider_credential(where, docs, values)
            if failures == before:
                demo = " (demo: true)" if values.get("demo") else ""
                print(f"  ok   {where}: metrics on port {METRICS_PORT} only, no well-known credential{demo}")
    if failures:
        print(f"Exposure check: {failures} failure(s)")
        return 1
    print("Exposure check: all assertions hold")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
