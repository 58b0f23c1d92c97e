#!/usr/bin/env bash
# The monitoring checks (`make monitoring`, part of `make test`): the SLO rules are what
# monitoring/slos.yaml gives, promtool accepts every rule file and passes the unit tests in
# monitoring/tests, then the live check proves every rule and dashboard query against a real
# Prometheus scraping the real services (scripts/monitoring/live-check.py).
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
promtool check rules charts/*/files/alerts.yaml charts/*/files/slo-rules.yaml
promtool test rules monitoring/tests/*.test.yaml
"$PY" scripts/monitoring/live-check.py
