#!/usr/bin/env bash
# The monitoring checks (`make monitoring`, part of `make test`): the SLO rules are what
# monitoring/slos.yaml gives and the dashboards what gen-dashboards.py builds; the dashboards
# are linted; every alert has its runbook and the runbooks' PromQL parses (and, with
# TEST_DATABASE_URL, their SQL runs against both services' migrations); promtool accepts
# every rule file and passes the unit tests in monitoring/tests; then the live check proves
# every rule and dashboard query against a real Prometheus scraping the real services
# (scripts/monitoring/live-check.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
export PATH="$TOOLS_DIR/bin:$PATH"
PY="$TOOLS_DIR/bin/python-monitoring"
for tool in promtool prometheus "$PY"; do
  command -v "$tool" >/dev/null || {
    echo "monitoring: $tool not found; run scripts/monitoring/install-tools.sh" >&2
    exit 2
  }
done
cd "$ROOT"

"$PY" scripts/monitoring/gen-slo-rules.py --check
"$PY" scripts/monitoring/gen-dashboards.py --check
"$PY" scripts/monitoring/lint-dashboards.py charts/*/files/dashboards/*.json
"$PY" scripts/monitoring/check-runbooks.py
if [[ -n "${TEST_DATABASE_URL:-}" ]]; then
  "$PY" scripts/monitoring/check-runbook-sql.py "$TEST_DATABASE_URL"
else
  echo "  SKIPPED runbook SQL on PostgreSQL: set TEST_DATABASE_URL=postgres://user@host:5432 to run it"
fi
promtool check rules charts/*/files/alerts.yaml charts/*/files/slo-rules.yaml
promtool test rules monitoring/tests/*.test.yaml
"$PY" scripts/monitoring/live-check.py
