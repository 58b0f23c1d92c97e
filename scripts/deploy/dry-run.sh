#!/usr/bin/env bash
# deploy.sh and test.sh against stub tools: fake docker, kind, kubectl, helm and curl that
# log their arguments (no cluster, no Docker engine). helm's stub renders every local chart
# with the real helm and exactly deploy.sh's values, so the fail-closed charts must accept
# what deploy.sh passes. Checks:
#   - kind deploys under this bash, with the Gateway (default) and with --ingress:
#     attestation-free build, load through an archive, team values files, the API server's
#     addresses, the API key's digest, the way in and its timeouts; the kind cluster's API
#     server enables DenyServiceExternalIPs for either kubeadm API version;
#   - --down --context: waits for the namespaces' deletion;
#   - a bash too old (PREFLIGHT_BASH_VERSION=3.2, and 4.3) is refused before any tool runs;
#   - a missing tool (jq) is named with Linux and macOS hints.
# Run by `make charts`. Needs helm (scripts/charts/install-tools.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
REAL_HELM="$(PATH="$TOOLS_DIR/bin:$PATH" command -v helm)" || { echo "dry-run: helm not found" >&2; exit 2; }
export REAL_HELM

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stubs="$work/stubs"
export LOG="$work/log"
mkdir -p "$stubs" "$LOG"
failures=0
fail() {
  echo "  FAIL $*"
  failures=$((failures + 1))
}
ok() { echo "  ok   $*"; }
# has FILE TEXT WHAT: TEXT (fixed string) is in FILE.
has() { if grep -qF -- "$2" "$1" 2>/dev/null; then ok "$3"; else fail "$3 (no '$2' in ${1##*/})"; fi; }
hasnt() { if grep -qF -- "$2" "$1" 2>/dev/null; then fail "$3 ('$2' in ${1##*/})"; else ok "$3"; fi; }

# The stubs' bodies are literal scripts: nothing in them expands here.
# shellcheck disable=SC2016
stub() { printf '#!/usr/bin/env bash\nprintf "%%s\\n" "$*" >>"$LOG/%s.log"\n%s\n' "$1" "$2" >"$stubs/$1"; chmod +x "$stubs/$1"; }
# shellcheck disable=SC2016
stub docker '
case "$1" in
  image) echo sha256:0123456789abcdef0123456789abcdef ;;
  save) touch "$3" ;;
esac
exit 0'
# shellcheck disable=SC2016
stub kind '
if [[ "$1 $2" == "create cluster" ]]; then
  while (($#)); do [[ "$1" == --config ]] && cp "$2" "$LOG/kind-config.yaml"; shift; done
fi
exit 0'
stub curl 'echo 200'
# shellcheck disable=SC2016
stub kubectl '
[[ "$1" == --context ]] && shift 2
args="$*"
case "$args" in
  "get service kubernetes"*) echo 10.96.0.10 ;;
  "get endpointslices"*addresses*) echo 172.18.0.9 ;;
  "get endpointslices"*port*) echo 6443 ;;
  "get deployment -A"*) echo cnpg-system ;;
  "get crd"* | "-n kube-system get daemonset kindnet"* | "get namespace"*) exit 1 ;;
  "get nodes -l"*) echo node/invoice-platform-control-plane ;;
  "create secret"*) for a in "$@"; do [[ "$a" == --from-file=* ]] && a="${a#*=}" && cp "${a#*=}" "$LOG/secret-${a%%=*}"; done; echo "kind: Secret" ;;
  "label --local"* | "apply -f -"*) cat ;;
  "apply -f "*) n=$(ls "$LOG" | wc -l); cp "$3" "$LOG/applied-$n-${3##*/}" ;;
esac
exit 0'
# shellcheck disable=SC2016
stub helm '
[[ "$1" == --kube-context ]] && shift 2
case "$1" in
  status) exit 1 ;;
  upgrade)
    release="$3" chart="$4"; shift 4
    [[ -d "$chart" ]] || exit 0
    args=()
    while (($#)); do
      case "$1" in
        --wait | --create-namespace) ;;
        --timeout) shift ;;
        *) args+=("$1") ;;
      esac
      shift
    done
    exec "$REAL_HELM" template "$release" "$chart" "${args[@]}" >"$LOG/rendered-$release.yaml"
    ;;
esac
exit 0'

run() {
  local name="$1" status=0
  shift
  (cd "$work" && env PATH="$stubs:$PATH" HOME="$work/home" "$@") >"$work/$name.out" 2>&1 || status=$?
  echo "$status" >"$work/$name.status"
}

# deploy_checks NAME: what holds for every kind deploy.
deploy_checks() {
  local name="$1"
  if [[ "$(cat "$work/$name.status")" == 0 ]]; then ok "deploy.sh exits 0"; else
    sed 's/^/    /' "$work/$name.out"
    fail "deploy.sh exited $(cat "$work/$name.status")"
  fi
  has "$LOG/docker.log" "--provenance=false --sbom=false" "images built without attestations"
  has "$LOG/docker.log" "save -o" "images saved to an archive"
  has "$LOG/kind.log" "load image-archive" "kind loads the archives"
  hasnt "$LOG/kind.log" "load docker-image" "no kind load docker-image"
  has "$LOG/helm.log" "team-namespace/ci/invoices-values.yaml" "team invoices from its values file"
  has "$LOG/helm.log" "team-namespace/ci/payments-values.yaml" "team payments from its values file"
  has "$LOG/rendered-payment-provider.yaml" "10.96.0.10/32" "payment-provider: API server Service address"
  has "$LOG/rendered-payment-provider.yaml" "172.18.0.9/32" "payment-provider: API server endpoint"
  has "$LOG/rendered-invoice-app.yaml" "invoice-app-api-keys" "invoice-app reads the API keys Secret"
  has "$LOG/rendered-payment-provider.yaml" "TLS_CERT_FILE" "payment-provider serves its API over TLS"
  has "$LOG/rendered-payment-provider.yaml" "name: payment-provider-tls" "from the Secret deploy.sh made"
  has "$LOG/rendered-invoice-app.yaml" "https://payment-provider.payments.svc.cluster.local:8080" "invoice-app calls it over https"
  has "$LOG/rendered-invoice-app.yaml" "name: payment-provider-ca" "trusting the CA deploy.sh made"
  hasnt "$LOG/rendered-payment-provider.yaml" "ALLOW_PLAINTEXT_HTTP" "no plain HTTP opt-in"
  local key_file="$work/home/.local/state/invoice-platform/api-key-kind-invoice-platform" digest
  if [[ -s "$key_file" && -f "$LOG/secret-api-keys" ]]; then
    digest="$(printf '%s' "$(cat "$key_file")" | sha256sum | awk '{print $1}')"
    has "$LOG/secret-api-keys" "\"sha256\": \"$digest\"" "the Secret holds the key's SHA-256"
    hasnt "$LOG/secret-api-keys" "$(cat "$key_file")" "the Secret does not hold the key"
    if [[ "$(stat -c %a "$key_file")" == 600 ]]; then ok "key file mode 600"; else fail "key file mode $(stat -c %a "$key_file")"; fi
  else
    fail "no API key file or no API keys Secret"
  fi
  has "$work/$name.out" "INVOICE_API_TOKEN=" "prints how to give the key to test.sh"
  local db
  for db in invoices-db payments-db; do
    has "$LOG/rendered-$db.yaml" "kind: Cluster" "$db: the Cluster from charts/team-database"
    has "$LOG/rendered-$db.yaml" "cidr: \"172.18.0.9/32\"" "$db: its policy lets the instances reach the API server"
    has "$LOG/rendered-$db.yaml" "kubernetes.io/metadata.name: cnpg-system" "$db: and lets the operator in"
  done
  if compgen -G "$LOG/applied-*-cluster-*" >/dev/null || compgen -G "$LOG/applied-*-netpol-*" >/dev/null; then
    fail "database manifests applied outside helm"
  else
    ok "no database manifest applied outside helm"
  fi
  validate "$name"
}

# kind_config_checks: the cluster deploy.sh asks kind for. Its kubeadm patches must parse and
# enable DenyServiceExternalIPs (next to kubeadm's own NodeRestriction) in the kubeadm API
# version the node image uses: v1beta3 takes extraArgs as a map, v1beta4 as a name/value list.
kind_config_checks() {
  local config="$LOG/kind-config.yaml"
  [[ -s "$config" ]] || { fail "kind create cluster got no --config"; return; }
  if "$TOOLS_DIR/bin/python-k8s" - "$config" <<'PY'; then ok "kind: the API server enables DenyServiceExternalIPs (kubeadm v1beta3 and v1beta4)"; else fail "kind: DenyServiceExternalIPs not enabled for both kubeadm versions"; fi
import sys, yaml
cluster = yaml.safe_load(open(sys.argv[1]))
found = {}
for raw in cluster.get("kubeadmConfigPatches") or []:
    patch = yaml.safe_load(raw)
    if patch.get("kind") != "ClusterConfiguration":
        continue
    args = (patch.get("apiServer") or {}).get("extraArgs")
    if isinstance(args, list):
        args = {a["name"]: a["value"] for a in args}
    found[patch.get("apiVersion")] = (args or {}).get("enable-admission-plugins", "").split(",")
want = {"kubeadm.k8s.io/v1beta3": dict, "kubeadm.k8s.io/v1beta4": list}
ok = True
for version in want:
    plugins = found.get(version) or []
    if not {"NodeRestriction", "DenyServiceExternalIPs"} <= set(plugins):
        print(f"    {version}: enable-admission-plugins = {plugins}")
        ok = False
for raw in cluster.get("kubeadmConfigPatches") or []:
    patch = yaml.safe_load(raw)
    kind = want.get(patch.get("apiVersion"))
    args = (patch.get("apiServer") or {}).get("extraArgs")
    if kind and args is not None and not isinstance(args, kind):
        print(f"    {patch['apiVersion']}: extraArgs must be a {kind.__name__}")
        ok = False
sys.exit(0 if ok else 1)
PY
}

# validate NAME: everything deploy.sh rendered, strictly against the Kubernetes schema (custom
# resources aside: Gateway API, CloudNativePG and Envoy Gateway kinds are not in it).
validate() {
  local dir="$work/validate-$1"
  mkdir -p "$dir"
  "$TOOLS_DIR/bin/python-k8s" - "$LOG" "$dir" <<'PY'
import pathlib, sys, yaml
src, dst = map(pathlib.Path, sys.argv[1:])
for f in sorted(src.glob("rendered-*.yaml")) + sorted(src.glob("applied-*.yaml")):
    docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
    # Core and built-in groups stay; Gateway API and dotted groups outside *.k8s.io are CRDs.
    def builtin(api_version):
        group = api_version.split("/")[0] if "/" in api_version else ""
        return "." not in group or (group.endswith(".k8s.io") and group != "gateway.networking.k8s.io")
    keep = [d for d in docs if builtin(d["apiVersion"])]
    (dst / f.name).write_text(yaml.safe_dump_all(keep, sort_keys=False))
PY
  if "$TOOLS_DIR/bin/kubernetes-validate" --strict --quiet -k 1.34.0 "$dir"/*.yaml >"$dir.log" 2>&1 && ! grep -q . "$dir.log"; then
    ok "$(cat "$dir"/*.yaml | grep -c '^kind:') rendered objects valid against Kubernetes 1.34 (strict)"
  else
    cat "$dir.log"
    fail "kubernetes-validate"
  fi
}

echo "== deploy.sh on kind (Gateway API, the default), bash $BASH_VERSION"
run deploy bash "$ROOT/deploy.sh"
deploy_checks deploy
kind_config_checks
has "$LOG/helm.log" "oci://docker.io/envoyproxy/gateway-helm" "Envoy Gateway installed"
hasnt "$LOG/kubectl.log" "deploy/static/provider/kind/deploy.yaml" "no ingress-nginx"
if compgen -G "$LOG/applied-*-gateway.yaml" >/dev/null; then ok "the Gateway applied"; else fail "deploy/kind/gateway.yaml not applied"; fi
has "$LOG/rendered-invoice-app.yaml" "kind: HTTPRoute" "an HTTPRoute"
has "$LOG/rendered-invoice-app.yaml" "request: 330s" "HTTPRoute request timeout 330 s"
has "$LOG/rendered-invoice-app.yaml" "kubernetes.io/metadata.name: envoy-gateway-system" "Envoy's proxies admitted by invoice-app's policy"
hasnt "$LOG/rendered-invoice-app.yaml" "kind: Ingress" "no Ingress"

echo "== deploy.sh --ingress on kind"
rm -rf "${LOG:?}"/* "${work:?}/home"
run ingress bash "$ROOT/deploy.sh" --ingress
deploy_checks ingress
has "$LOG/kubectl.log" "deploy/static/provider/kind/deploy.yaml" "ingress-nginx installed"
has "$LOG/kubectl.log" '"nodePort":30080' "its node port fixed to the one kind maps"
hasnt "$LOG/helm.log" "gateway-helm" "no Envoy Gateway"
has "$LOG/rendered-invoice-app.yaml" 'nginx.ingress.kubernetes.io/proxy-read-timeout: "330"' "ingress read timeout 330 s"
has "$LOG/rendered-invoice-app.yaml" 'host: "localhost"' "ingress host"
hasnt "$LOG/rendered-invoice-app.yaml" "kind: HTTPRoute" "no HTTPRoute"

echo "== deploy.sh --down --context kind-x"
rm -f "$LOG"/*.log
run down bash "$ROOT/deploy.sh" --down --context kind-x
if [[ "$(cat "$work/down.status")" == 0 ]]; then ok "exits 0"; else
  sed 's/^/    /' "$work/down.out"
  fail "--down exited $(cat "$work/down.status")"
fi
has "$LOG/kubectl.log" "delete namespace invoices payments isolation-probe --ignore-not-found --wait=true" "waits for the namespaces"

for version in 3.2 4.3; do
  for script in deploy.sh test.sh; do
    echo "== $script under bash $version (PREFLIGHT_BASH_VERSION)"
    rm -f "$LOG"/*.log
    run "old-$script" env PREFLIGHT_BASH_VERSION="$version" bash "$ROOT/$script" http://127.0.0.1:1
    if [[ "$(cat "$work/old-$script.status")" == 2 ]]; then ok "exit 2"; else fail "exit $(cat "$work/old-$script.status")"; fi
    has "$work/old-$script.out" "needs bash >= 4.4; this is bash $version" "refused, clearly"
    has "$work/old-$script.out" "brew install bash" "with the macOS hint"
    if compgen -G "$LOG/*.log" >/dev/null; then fail "a tool ran before the refusal"; else ok "no tool ran"; fi
  done
done

echo "== deploy.sh and test.sh without jq"
nojq="$work/nojq"
mkdir -p "$nojq"
IFS=: read -r -a dirs <<<"$stubs:$PATH"
for dir in "${dirs[@]}"; do
  for exe in "$dir"/*; do
    tool="${exe##*/}"
    [[ "$tool" == jq || -e "$nojq/$tool" || ! -x "$exe" ]] || ln -s "$exe" "$nojq/$tool"
  done
done
for script in deploy.sh test.sh; do
  status=0 args=()
  [[ "$script" == test.sh ]] && args=(http://127.0.0.1:1)
  (cd "$work" && env PATH="$nojq" HOME="$work/home" bash "$ROOT/$script" "${args[@]}") >"$work/nojq.out" 2>&1 || status=$?
  if [[ "$status" == 2 ]]; then ok "$script: exit 2"; else fail "$script: exit $status"; fi
  has "$work/nojq.out" "missing tools: jq" "$script names jq"
  has "$work/nojq.out" "brew install jq" "$script: macOS hint"
done

if ((failures)); then
  echo "deploy dry run: $failures check(s) failed" >&2
  exit 1
fi
echo "deploy dry run: all checks passed"
