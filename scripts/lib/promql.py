"""PromQL as the monitoring checks read it (lint-dashboards.py, check-runbooks.py,
live-check.py): parsed by promql-parser, a binding of a Rust PromQL parser, instead of
regular expressions; and the metric names our services export, against which every rule,
panel and runbook query is held."""

import pathlib

import promql_parser
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULE_FILES = sorted(ROOT.glob("charts/*/files/*.yaml"))
# What the services export (crates/*/src/metrics.rs); histograms with their series suffixes.
EXPORTED = {
    "up",
    "http_requests_total", "http_request_duration_seconds",
    "process_start_time_seconds", "process_cpu_seconds_total", "process_resident_memory_bytes",
    "process_open_fds", "process_max_fds", "process_virtual_memory_bytes",
    "invoice_app_invoices", "invoice_app_pay_run_duration_seconds", "invoice_app_charge_attempts_total",
    "invoice_app_pay_runs", "invoice_app_pay_run_invoices", "invoice_app_charge_calls_unanswered_total",
    "invoice_app_recent_charge_attempts", "invoice_app_recent_charge_attempts_unanswered",
    "invoice_app_database_up", "invoice_app_invoices_attention", "invoice_app_invoices_lease_expired",
    "invoice_app_pay_run_oldest_running_seconds", "invoice_app_oldest_unsettled_seconds",
    "invoice_app_last_completed_pay_run_timestamp_seconds", "invoice_app_last_completed_daily_run_timestamp_seconds",
    "invoice_app_invoices_retry_due", "invoice_app_oldest_retry_due_seconds", "invoice_app_dunning_invoices",
    "invoice_app_reconciled_total",
    "payment_provider_charges_total", "payment_provider_database_up",
}
HISTOGRAMS = {"http_request_duration_seconds", "invoice_app_pay_run_duration_seconds"}
# Grafana's variables as a panel sends them for the last hour. The durations are replaced
# before parsing (`[$__rate_interval]` is no PromQL); `$namespace` only for Prometheus, so
# the lint still sees the matcher as written.
DURATIONS = {"$__rate_interval": "1m", "${__rate_interval}": "1m", "$__interval": "15s",
             "${__interval}": "15s", "$__range": "1h", "${__range}": "1h"}
NAMESPACE = {"${namespace}": ".*", "$namespace": ".*"}


def with_durations(expr: str) -> str:
    for var, value in DURATIONS.items():
        expr = expr.replace(var, value)
    return expr


def for_prometheus(expr: str) -> str:
    """A panel's query as Prometheus receives it from Grafana."""
    expr = with_durations(expr)
    for var, value in NAMESPACE.items():
        expr = expr.replace(var, value)
    return expr


def selectors(expr: str) -> list:
    """Every series selector of expr (promql_parser.VectorSelector). Raises ValueError when
    expr is not PromQL."""
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(with_durations(expr)), visit)
    return found


def metric_names(expr: str) -> set[str]:
    return {s.name for s in selectors(expr) if s.name}


def has_matcher(selector, label: str, op, value: str) -> bool:
    return any(m.name == label and m.op == op and m.value == value for m in selector.matchers.matchers)


def rules() -> list[tuple[pathlib.Path, dict]]:
    """(file, rule) for every rule of the charts' rule files."""
    return [(f, rule) for f in RULE_FILES
            for group in (yaml.safe_load(f.read_text()) or {}).get("groups", [])
            for rule in group["rules"]]


def known_metrics() -> tuple[set[str], list[str]]:
    """What the services export plus what the rule files record; and the rule files' own
    uses of unknown names (a typo in a rule is as silent as one in a panel)."""
    known = set(EXPORTED) | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "count", "sum")}
    known |= {rule["record"] for _, rule in rules() if "record" in rule}
    errs = []
    for f, rule in rules():
        where = f"{f.relative_to(ROOT)}: {rule.get('alert') or rule.get('record')}"
        try:
            errs += [f"{where}: unknown metric {m!r}" for m in sorted(metric_names(rule["expr"]) - known)]
        except ValueError as e:
            errs.append(f"{where}: not PromQL ({e})")
    return known, errs
