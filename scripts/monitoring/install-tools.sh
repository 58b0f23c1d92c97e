#!/usr/bin/env bash
# Installs what the monitoring checks need into a cache outside the repo, without root:
# promtool and the Prometheus server from Debian's `prometheus` package (`apt-get download`
# and `dpkg-deb -x`: the binaries only, no service started), and a venv for the check
# scripts: PyYAML, grafana-foundation-sdk (the dashboards' builders, generated from Grafana's
# own schemas) and promql-parser (a Rust PromQL parser's binding). Idempotent. Elsewhere
# (macOS), put promtool and prometheus on PATH (`brew install prometheus`).
#
#   scripts/monitoring/install-tools.sh     # then: $TOOLS_DIR/bin/{promtool,prometheus,python-monitoring}
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
PYTHON="${PYTHON:-python3}"
PYYAML_VERSION="6.0.2"
# Grafana 11.6's schemas (the number before `!` is the SDK's build); Apache 2.0.
GRAFANA_SDK_VERSION="1769699379!11.6.0"
PROMQL_PARSER_VERSION="0.12.0"
# The rules use nothing newer than this (Debian 12's package).
PROMETHEUS_MIN="2.42"
BIN="$TOOLS_DIR/bin"
mkdir -p "$BIN"

# shellcheck source=scripts/lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"

install_prometheus() {
  # Binaries already on PATH (e.g. Homebrew's) are used as they are.
  if command -v promtool >/dev/null && command -v prometheus >/dev/null &&
    [[ "$(command -v promtool)" != "$BIN/promtool" ]]; then
    return
  fi
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    log "promtool/prometheus >= $PROMETHEUS_MIN missing: brew install prometheus (or your package manager's)"
    return 1
  fi
  local want
  want="$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: //p')"
  if [[ -z "$want" || "$want" == "(none)" ]]; then
    log "no prometheus package known to apt (run: sudo apt-get update)"
    return 1
  fi
  if installed prometheus "$want" && [[ -x "$BIN/promtool" && -x "$BIN/prometheus" ]]; then
    return
  fi
  log "installing promtool and prometheus from Debian's prometheus $want"
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand $work now: it is local to this function
  trap "rm -rf '$work'" RETURN
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "prometheus=$want" >/dev/null)
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  install -m 0755 "$work/root/usr/bin/promtool" "$BIN/promtool"
  install -m 0755 "$work/root/usr/bin/prometheus" "$BIN/prometheus"
  stamp prometheus "$want"
}

install_prometheus
make_venv venv-monitoring "pyyaml=$PYYAML_VERSION grafana=$GRAFANA_SDK_VERSION promql=$PROMQL_PARSER_VERSION" \
  "PyYAML==$PYYAML_VERSION" "grafana-foundation-sdk==$GRAFANA_SDK_VERSION" "promql-parser==$PROMQL_PARSER_VERSION"
python_wrapper python-monitoring venv-monitoring
