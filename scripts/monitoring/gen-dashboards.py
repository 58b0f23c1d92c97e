#!/usr/bin/env python3
"""Writes the charts' Grafana dashboards (charts/<chart>/files/dashboards/<chart>.json).

    scripts/monitoring/gen-dashboards.py           write them
    scripts/monitoring/gen-dashboards.py --check   fail if a committed file differs

Built with grafana-foundation-sdk's builders (models generated from Grafana's own schemas,
installed by scripts/monitoring/install-tools.sh), so every key written is one Grafana's
dashboard schema knows and the grid is laid out by the SDK. Every panel queries through the
`${datasource}` variable and selects its series with `namespace=~"$namespace"`;
lint-dashboards.py checks the result. Edit the panels here, not the JSON.
"""

import json
import pathlib
import sys

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import QueryEditorMode

ROOT = pathlib.Path(__file__).resolve().parents[2]
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace=~"$namespace"'
RI = "$__rate_interval"
RUNBOOKS = "https://github.com/invoice-platform/invoice-platform/blob/main/docs/runbooks/README.md"

TRACES = (
    " Traces: both services export OTLP traces (config `otelExporterOtlpEndpoint`), one trace"
    " from invoice-app's pay run through payment-provider's charge; JSON log lines carry the"
    " fields of their span (run_id, invoice_id, route), which are attributes of the same spans."
    " These metrics carry no exemplars (the Rust `prometheus` crate does not export them), so"
    " find the traces of a spike by service, route or run id and time range in your trace backend."
)


class Board:
    """A dashboard builder with our conventions: the datasource and namespace variables,
    panel ids in order, and one call per panel."""

    def __init__(self, uid, title, description, jobs):
        self.ids = 0
        namespaces = 'label_values(up{job=~"%s"}, namespace)' % "|".join(jobs)
        self.dashboard = (
            db.Dashboard(title).uid(uid).description(description).tags(["invoice-platform"])
            .editable().tooltip(dm.DashboardCursorSync.CROSSHAIR).version(1).refresh("30s")
            .timezone("utc").time("now-6h", "now")
            .link(db.DashboardLink("Invoice platform dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                  .tags(["invoice-platform"]).as_dropdown(False).include_vars(True).keep_time(True)
                  .target_blank(False).icon("external link"))
            .link(db.DashboardLink("Runbooks").type(dm.DashboardLinkType.LINK).url(RUNBOOKS)
                  .icon("doc").target_blank(True))
            .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
            .with_variable(db.QueryVariable("namespace").label("Namespace").datasource(DS)
                           .query({"query": namespaces, "refId": "namespace"})
                           .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                           .sort(dm.VariableSort.ALPHABETICAL_ASC)
                           .include_all(True).all_value(".*").multi(True))
        )

    def _id(self):
        self.ids += 1
        return self.ids

    def row(self, title):
        self.dashboard.with_row(db.Row(title).id(self._id()))

    def panel(self, title, description, targets, unit, kind="timeseries", w=12, h=8,
              thresholds=None, stack=False, decimals=None, min_zero=True):
        p = timeseries.Panel() if kind == "timeseries" else stat.Panel()
        p.id(self._id()).title(title).description(description).datasource(DS).span(w).height(h).unit(unit)
        for i, (expr, legend) in enumerate(targets):
            p.with_target(prometheus.Dataquery().datasource(DS).ref_id(chr(ord("A") + i)).expr(expr)
                          .legend_format(legend).range().editor_mode(QueryEditorMode.CODE))
        if decimals is not None:
            p.decimals(decimals)
        if thresholds:
            p.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
                [dm.Threshold(color="green")] + [dm.Threshold(value=v, color=c) for v, c in thresholds]))
        if kind == "timeseries":
            if min_zero:
                p.min(0)
            (p.draw_style(cm.GraphDrawStyle.LINE).line_width(1).fill_opacity(10 if stack else 0)
             .show_points(cm.VisibilityMode.NEVER).span_nulls(False)
             .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL if stack else cm.StackingMode.NONE).group("A"))
             .thresholds_style(cb.GraphThresholdsStyleConfig().mode(
                 cm.GraphThresholdsStyleMode.LINE if thresholds else cm.GraphThresholdsStyleMode.OFF))
             .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)))
        else:
            (p.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
             .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.AREA)
             .text_mode(cm.BigValueTextMode.VALUE_AND_NAME).justify_mode(cm.BigValueJustifyMode.AUTO)
             .orientation(cm.VizOrientation.AUTO))
        self.dashboard.with_panel(p)

    def json(self):
        return json.dumps(self.dashboard.build(), cls=JSONEncoder, indent=2) + "\n"


def red(b, job, description):
    """HTTP rate, errors and duration per route of one service."""
    sel = f'job="{job}", {NS}'
    b.row("HTTP: rate, errors, duration per route")
    b.panel("Requests by route", f"Requests per second to {job}, by route (`unmatched`: no route).",
            [(f"sum by (route) (rate(http_requests_total{{{sel}}}[{RI}]))", "{{route}}")], "reqps", w=8)
    # A route that never failed has no 5xx series: `or ... * 0` shows it at 0, not as no data.
    b.panel("5xx ratio by route", "Share of requests answered with a 5xx, by route." + description,
            [(f'(sum by (route) (rate(http_requests_total{{{sel}, status=~"5.."}}[{RI}]))'
              f" or sum by (route) (rate(http_requests_total{{{sel}}}[{RI}])) * 0)"
              f" / sum by (route) (rate(http_requests_total{{{sel}}}[{RI}]))", "{{route}}")],
            "percentunit", w=8, thresholds=[(0.001, "red")])
    b.panel("4xx by route and status", "Requests answered with a 4xx per second, by route and status.",
            [(f'sum by (route, status) (rate(http_requests_total{{{sel}, status=~"4.."}}[{RI}]))',
              "{{route}} {{status}}")], "reqps", w=8)
    b.panel("Latency p50 / p95 / p99 by route",
            "Request duration quantiles by route, from the histogram (buckets 0.5 ms to 5 s)." + TRACES,
            [(f"histogram_quantile({q}, sum by (route, le) (rate(http_request_duration_seconds_bucket{{{sel}}}[{RI}])))",
              f"p{int(q * 100)} {{{{route}}}}") for q in (0.5, 0.95, 0.99)], "s", w=24, h=9)


def process(b, job, db_metric):
    sel = f'job="{job}", {NS}'
    b.row("Process and database")
    b.panel("Database up", f"1 when {job} could query its database at the last scrape, per pod.",
            [(f"min by (namespace, instance) ({db_metric}{{{sel}}})", "{{namespace}} {{instance}}")],
            "bool_yes_no", w=6, min_zero=False)
    b.panel("Scraped (up)", "1 when Prometheus scraped the pod's metrics port.",
            [(f"up{{{sel}}}", "{{namespace}} {{instance}}")], "bool_yes_no", w=6, min_zero=False)
    b.panel("Restarts (30 min)",
            "Process starts within 30 minutes, from changes of process_start_time_seconds"
            " (no kube-state-metrics needed).",
            [(f"changes(process_start_time_seconds{{{sel}}}[30m])", "{{instance}}")], "short", w=6,
            thresholds=[(3, "red")], decimals=0)
    b.panel("Open file descriptors", "Open file descriptors per pod.",
            [(f"process_open_fds{{{sel}}}", "{{instance}}")], "short", w=6, decimals=0)
    b.panel("Resident memory", "Resident memory per pod (compare with the chart's memory limit).",
            [(f"process_resident_memory_bytes{{{sel}}}", "{{instance}}")], "bytes")
    b.panel("CPU", "CPU used per pod, in cores.",
            [(f"rate(process_cpu_seconds_total{{{sel}}}[{RI}])", "{{instance}}")], "short")


def burn(b, slo, objective, alert, w=12):
    budget = round(1 - objective / 100, 6)
    b.panel(f"{slo}: burn rate",
            f"Error ratio of the SLO `{slo}` ({objective} %) divided by its error budget ({budget}),"
            " from the recording rules slo:*:error_ratio_rate<window>: 1 spends the 30-day budget"
            f" in exactly 30 days. `{alert}` pages at 14.4 (1h and 5m) and 6 (6h and 30m), and"
            " opens a ticket at 3 (1d and 2h) and 1 (3d and 6h). See docs/slo.md.",
            [(f"slo:{slo.replace('-', '_')}:error_ratio_rate{win}{{{NS}}} / {budget}", f"{{{{namespace}}}} {win}")
             for win in ("5m", "1h", "6h", "1d", "3d")],
            "suffix:x", w=w, thresholds=[(1, "yellow"), (6, "orange"), (14.4, "red")])


def invoice_app():
    job = "invoice-app"
    sel = f'job="{job}", {NS}'
    pp = f'job="payment-provider", {NS}'
    b = Board("invoice-platform-invoice-app", "invoice-app",
              "Pay runs, invoices, charges, HTTP and SLOs of invoice-app (job=\"invoice-app\")."
              " Alerts and runbooks: docs/runbooks/; objectives: docs/slo.md.", [job, "payment-provider"])

    b.row("Pay runs")
    b.panel("Pay runs finished, by status",
            "Pay runs that ended per interval, by status (completed, failed, abandoned), read from"
            " the database: the CronJob's runs too. A failed or abandoned run:"
            " InvoiceAppPayRunFailed; GET /pay-runs/{id} says why.",
            [(f'max by (namespace, status) (delta(invoice_app_pay_runs{{{sel}, status!="running"}}[{RI}]))',
              "{{namespace}} {{status}}")], "short", w=6, stack=True, decimals=0)
    b.panel("Pay run duration p50 / p95",
            "Duration of the pay runs that ended in the serving pods (API, in-process schedule),"
            " from invoice_app_pay_run_duration_seconds; the CronJob's runs are not scraped.",
            [(f"histogram_quantile({q}, sum by (namespace, le) (rate(invoice_app_pay_run_duration_seconds_bucket{{{sel}}}[{RI}])))",
              f"{{{{namespace}}}} p{int(q * 100)}") for q in (0.5, 0.95)], "s", w=6)
    b.panel("Oldest running pay run",
            "How long the oldest pay run still running has been going (0: none)."
            " Over an hour: InvoiceAppPayRunTooLong.",
            [(f"max by (namespace) (invoice_app_pay_run_oldest_running_seconds{{{sel}}})", "{{namespace}}")],
            "s", w=4, kind="stat", thresholds=[(3600, "red")])
    b.panel("Since the last completed pay run",
            "Time since the last monthly pay run that completed (no value until one has)."
            " Over 32 days with invoices pending: InvoiceAppNoRecentPayRun.",
            [(f"time() - max by (namespace) (invoice_app_last_completed_pay_run_timestamp_seconds{{{sel}}})",
              "{{namespace}}")], "s", w=4, kind="stat", thresholds=[(32 * 86400, "red")])
    b.panel("Since the last completed daily run",
            "Time since the last daily run (invoice-app daily: past-due retries that are due)"
            " that completed (no value until one has). Over 26 hours, or none for 26 hours:"
            " InvoiceAppDailyRunNotCompleted.",
            [(f"time() - max by (namespace) (invoice_app_last_completed_daily_run_timestamp_seconds{{{sel}}})",
              "{{namespace}}")], "s", w=4, kind="stat", thresholds=[(26 * 3600, "red")])

    b.row("Invoices")
    b.panel("Invoices by status",
            "Invoices in the database by status (pending, processing, paid, failed, past_due,"
            " uncollectible); every replica reads the same counts, so the max over replicas.",
            [(f"max by (namespace, status) (invoice_app_invoices{{{sel}}})", "{{namespace}} {{status}}")],
            "short", w=12, stack=True, decimals=0)
    b.panel("Settlements by result",
            "Invoices the pay runs settled per interval, by result: paid, failed (declined),"
            " retry_later (back to pending: retry budget spent, or needing a person). Read from"
            " the database: the CronJob's runs too.",
            [(f"max by (namespace, result) (delta(invoice_app_pay_run_invoices{{{sel}}}[{RI}]))",
              "{{namespace}} {{result}}")], "short", w=12, stack=True, decimals=0)
    b.panel("Need attention",
            "Pending invoices carrying an attention reason (key conflict, refused credential, unknown"
            " answer): InvoiceAppInvoicesNeedAttention. Never mark them failed without checking the provider.",
            [(f"max by (namespace) (invoice_app_invoices_attention{{{sel}}})", "{{namespace}}")],
            "short", w=6, kind="stat", thresholds=[(1, "red")], decimals=0)
    b.panel("Processing past their lease",
            "Invoices in processing whose claim lease expired: nothing is paying them."
            " InvoiceAppInvoicesStuckProcessing after 15 minutes.",
            [(f"max by (namespace) (invoice_app_invoices_lease_expired{{{sel}}})", "{{namespace}}")],
            "short", w=6, kind="stat", thresholds=[(1, "red")], decimals=0)
    b.panel("Oldest unsettled invoice",
            "Age since the first attempt of the oldest invoice a pay run tried that is still pending"
            " or processing (0: none). The billing objective is 6 h: InvoiceAppInvoicesUnsettled.",
            [(f"max by (namespace) (invoice_app_oldest_unsettled_seconds{{{sel}}})", "{{namespace}}")],
            "s", w=12, thresholds=[(6 * 3600, "red")])

    b.row("Dunning")
    b.panel("Past due, and retries due",
            "Invoices past due after a soft decline (insufficient_funds, try_again_later), and"
            " those whose next attempt (DUNNING_SCHEDULE) is due: the next pay run takes them."
            " Due ones piling up between runs: no run retries them.",
            [(f'max by (namespace) (invoice_app_invoices{{{sel}, status="past_due"}})', "{{namespace}} past due"),
             (f"max by (namespace) (invoice_app_invoices_retry_due{{{sel}}})", "{{namespace}} retry due")],
            "short", w=8, decimals=0)
    b.panel("Earliest due retry waiting",
            "Time since the earliest due retry of a past-due invoice fell due (0: none due)."
            " Over 2 days: InvoiceAppPastDueRetriesOverdue.",
            [(f"max by (namespace) (invoice_app_oldest_retry_due_seconds{{{sel}}})", "{{namespace}}")],
            "s", w=4, kind="stat", thresholds=[(2 * 86400, "red")])
    b.panel("Dunning outcomes, last 30 days",
            "Invoices that went past due in the last 30 days, by status now: past_due (still"
            " being retried), paid (recovered by a retry), failed (a hard decline on a retry),"
            " uncollectible (every retry declined).",
            [(f"max by (namespace, status) (invoice_app_dunning_invoices{{{sel}}})", "{{namespace}} {{status}}")],
            "short", w=12, stack=True, decimals=0)
    b.panel("Uncollectible share of ended dunning",
            "Of the invoices that went past due in the last 30 days and whose dunning ended"
            " (paid, failed, uncollectible), the share given up on. Above 80 % (at least 10) for"
            " an hour: InvoiceAppUncollectibleRatioHigh.",
            [(f'max by (namespace) (invoice_app_dunning_invoices{{{sel}, status="uncollectible"}})'
              f' / max by (namespace) (sum by (namespace, instance) (invoice_app_dunning_invoices{{{sel}, status=~"paid|failed|uncollectible"}}))',
              "{{namespace}}")],
            "percentunit", w=12, thresholds=[(0.8, "red")])
    b.panel("Became uncollectible",
            "Invoices given up on per interval (the schedule spent, every retry declined), read"
            " from the database: the CronJob's runs too.",
            [(f'max by (namespace) (delta(invoice_app_invoices{{{sel}, status="uncollectible"}}[{RI}]))',
              "{{namespace}}")], "short", w=12, decimals=0)

    b.row("Charges at payment-provider")
    b.panel("Charge attempts by outcome",
            "Calls to payment-provider started in the last 10 minutes, by outcome, read from the"
            " database (every process's, the CronJob's too): succeeded, declined (an answer),"
            " retryable (retried with backoff), unknown (no answer known: retried with the same"
            " key), attention." + TRACES,
            [(f"max by (namespace, outcome) (invoice_app_recent_charge_attempts{{{sel}}})",
              "{{namespace}} {{outcome}}")], "short", w=12, stack=True, decimals=0)
    b.panel("Charge error ratio",
            "Share of the last 10 minutes' charge attempts ending retryable, unknown or attention"
            " (declines are answers, not errors). Above 10 % for 10 minutes:"
            " InvoiceAppChargeErrorRatioHigh.",
            [(f'(max by (namespace) (sum by (namespace, instance) (invoice_app_recent_charge_attempts{{{sel}, outcome=~"retryable|unknown|attention"}}))'
              f" or max by (namespace) (sum by (namespace, instance) (invoice_app_recent_charge_attempts{{{sel}}})) * 0)"
              f" / max by (namespace) (sum by (namespace, instance) (invoice_app_recent_charge_attempts{{{sel}}}))",
              "{{namespace}}")],
            "percentunit", w=12, thresholds=[(0.1, "red")])
    b.panel("Provider errors and unanswered calls",
            "Of the last 10 minutes' charge attempts (every process's): those that got no HTTP"
            " answer (refused, reset, timed out) and those answered retryably. Unanswered above"
            " half for 5 minutes: InvoiceAppProviderUnreachable.",
            [(f"max by (namespace) (invoice_app_recent_charge_attempts_unanswered{{{sel}}})",
              "{{namespace}} unanswered"),
             (f'max by (namespace) (invoice_app_recent_charge_attempts{{{sel}, outcome="retryable"}})',
              "{{namespace}} retryable")], "short", w=8, decimals=0)
    b.panel("Retries and spent retry budgets",
            "Attempts of the last 10 minutes that will be retried (retryable, unknown), and the"
            " invoices that went back to pending per interval (retry budget spent or needing a"
            " person; InvoiceAppRetriesExhausted). Both from the database: the CronJob's runs too.",
            [(f'max by (namespace) (sum by (namespace, instance) (invoice_app_recent_charge_attempts{{{sel}, outcome=~"retryable|unknown"}}))',
              "{{namespace}} retried attempts"),
             (f'max by (namespace) (delta(invoice_app_pay_run_invoices{{{sel}, result="retry_later"}}[{RI}]))',
              "{{namespace}} back to pending")], "short", w=8, decimals=0)
    b.panel("Charge latency at payment-provider p50 / p95 / p99",
            "Duration of POST /v1/charges as payment-provider measures it. payment-provider usually"
            " runs in another namespace: select it too in the namespace variable." + TRACES,
            [(f'histogram_quantile({q}, sum by (namespace, le) (rate(http_request_duration_seconds_bucket{{{pp}, route="/v1/charges"}}[{RI}])))',
              f"{{{{namespace}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], "s", w=8)

    red(b, job, " API 5xx count against invoice-app-api-availability (docs/slo.md).")

    b.row("SLOs (docs/slo.md)")
    burn(b, "invoice-app-api-availability", 99.9, "InvoiceAppApiAvailabilityBudgetBurn")
    burn(b, "invoice-app-api-latency", 99, "InvoiceAppApiLatencyBudgetBurn")

    process(b, job, "invoice_app_database_up")
    return b


def payment_provider():
    job = "payment-provider"
    sel = f'job="{job}", {NS}'
    b = Board("invoice-platform-payment-provider", "payment-provider",
              "Charges, HTTP and SLO of payment-provider (job=\"payment-provider\")."
              " Alerts and runbooks: docs/runbooks/; objectives: docs/slo.md.", [job])

    b.row("Charges")
    b.panel("Charges by outcome",
            "POST /v1/charges per second by outcome: succeeded, the decline codes (insufficient_funds,"
            " try_again_later, account_closed, customer_not_found, currency_mismatch), replayed"
            " (same key, stored answer), in_flight"
            " (409, same key still running), key_reused (422), rate_limited (429), fault_injected"
            " (FAULT_* settings)." + TRACES,
            [(f"sum by (namespace, outcome) (rate(payment_provider_charges_total{{{sel}}}[{RI}]))",
              "{{namespace}} {{outcome}}")], "ops", w=12, stack=True)
    b.panel("Charge latency p50 / p95 / p99",
            "Duration of POST /v1/charges." + TRACES,
            [(f'histogram_quantile({q}, sum by (namespace, le) (rate(http_request_duration_seconds_bucket{{{sel}, route="/v1/charges"}}[{RI}])))',
              f"{{{{namespace}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], "s", w=12)
    b.panel("Charge answers by status",
            "POST /v1/charges per second by HTTP status; 401 for 10 minutes: PaymentProviderCallersRefused.",
            [(f'sum by (namespace, status) (rate(http_requests_total{{{sel}, route="/v1/charges"}}[{RI}]))',
              "{{namespace}} {{status}}")], "reqps", w=12, stack=True)
    b.panel("Injected faults and rate limiting",
            "Share of charge requests refused on purpose (fault_injected, rate_limited): they count"
            " against the charge availability SLO, as invoice-app meets them.",
            [(f'(sum by (namespace) (rate(payment_provider_charges_total{{{sel}, outcome=~"fault_injected|rate_limited"}}[{RI}]))'
              f" or sum by (namespace) (rate(payment_provider_charges_total{{{sel}}}[{RI}])) * 0)"
              f" / sum by (namespace) (rate(payment_provider_charges_total{{{sel}}}[{RI}]))", "{{namespace}}")],
            "percentunit", w=12)

    red(b, job, " POST /v1/charges 5xx count against payment-provider-charge-availability (docs/slo.md).")

    b.row("SLO (docs/slo.md)")
    burn(b, "payment-provider-charge-availability", 99.9, "PaymentProviderChargeAvailabilityBudgetBurn", w=24)

    process(b, job, "payment_provider_database_up")
    return b


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for chart, board in (("invoice-app", invoice_app()), ("payment-provider", payment_provider())):
        path = ROOT / "charts" / chart / "files" / "dashboards" / f"{chart}.json"
        text = board.json()
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            panels = sum(p["type"] != "row" for p in json.loads(text)["panels"])
            print(f"{path.relative_to(ROOT)}: {panels} panels")
    if stale:
        print("stale (run scripts/monitoring/gen-dashboards.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
