#!/usr/bin/env bash
# Deploys the invoice platform to Kubernetes: by default to a local kind cluster
# with Calico (so NetworkPolicies are enforced) and Envoy Gateway (Gateway API; or
# ingress-nginx with --ingress), or to an existing cluster with --context.
# Idempotent: run it again after a change.
# Run with --help for details.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# bash and tool checks first, in bash 3.2 syntax (macOS): see scripts/lib/preflight.sh.
# shellcheck source=scripts/lib/preflight.sh
source "$ROOT/scripts/lib/preflight.sh"
require_bash

readonly PROG="${0##*/}"
readonly ROOT

usage() {
  cat <<EOF
Usage: $PROG [options]        deploy (or update) the platform
       $PROG --down [options] remove it

Without --context: creates (or reuses) the kind cluster '$CLUSTER_NAME' with the
default CNI disabled and Calico installed (NetworkPolicy enforced), node ports
30080/30443 mapped to localhost:80/443, and the way in: Envoy Gateway with a Gateway
(deploy/kind/gateway.yaml; the default), or ingress-nginx with --ingress (retired
upstream in March 2026: no more security fixes); builds both images and loads them.
Then, on either kind of cluster:
  - the CloudNativePG operator (helm chart, namespace $CNPG_NAMESPACE) unless one is installed;
  - charts/team-namespace once per team (releases team-invoices and team-payments in
    namespace $PLATFORM_NAMESPACE): namespaces 'invoices' and 'payments', Pod Security
    'restricted', default-deny NetworkPolicies;
  - per team charts/team-database (releases invoices-db, payments-db): a CloudNativePG
    Cluster and the NetworkPolicy that lets the operator, the instances and the team's
    app reach it;
  - invoice-app's API key: generated once into \$API_KEY_FILE (this machine only); the
    cluster keeps its SHA-256 alone (Secret invoices/$API_KEYS_SECRET);
  - payment-provider's TLS certificate, signed by a CA made once (its key discarded): Secret
    payments/$TLS_SECRET, and the CA for invoice-app in ConfigMap invoices/$TLS_CA_CONFIGMAP;
  - charts/payment-provider in 'payments' over TLS (callers known by workload identity: invoice-app's
    ServiceAccount token; the API server's addresses read from the cluster) and
    charts/invoice-app in 'invoices' behind an HTTPRoute (or with --ingress an Ingress)
    for host \$INVOICE_HOST, with proxy timeouts that fit a synchronous pay run
    (helm upgrade --install --wait).
Finally it prints the command that runs ./test.sh against it.

Options:
  --context NAME   deploy to this existing kubectl context (also: KUBE_CONTEXT) instead
                   of a kind cluster: no cluster, CNI or ingress controller is installed,
                   and images are neither built nor loaded unless asked (--build, --load)
  --build          build the images (default with kind)
  --skip-build     do not build; use images already built locally, tagged \$IMAGE_TAG
  --push           push the built images (to \$IMAGE_REPOSITORY_PREFIX, for a real registry)
  --load           load the images into kind (default with kind; with --context only
                   for a context named kind-<cluster>)
  --no-load        do not load the images into kind
  --gateway        the way in is Gateway API: Envoy Gateway on kind; with --context, a
                   Gateway 'gateway' in namespace gateway-system (default)
  --ingress        the way in is an Ingress of class nginx (ingress-nginx on kind)
  --down           remove everything: the kind cluster, or with --context the releases,
                   databases and namespaces this script created
  -h, --help       show this help

Environment (optional):
  CLUSTER_NAME             kind cluster name (default invoice-platform)
  KUBE_CONTEXT             same as --context
  IMAGE_REPOSITORY_PREFIX  image repositories are <prefix>/<app> (default invoice-platform)
  IMAGE_TAG                image tag; default with --build: derived from the image's content
                           (so an unchanged build changes nothing), else the charts' appVersion
  KIND_NODE_IMAGE          node image for kind (default: kind's own)
  CALICO_VERSION           default $CALICO_VERSION
  INGRESS_NGINX_VERSION    default $INGRESS_NGINX_VERSION
  ENVOY_GATEWAY_VERSION    Envoy Gateway chart version (default $ENVOY_GATEWAY_VERSION)
  CNPG_CHART_VERSION       cloudnative-pg chart version (default $CNPG_CHART_VERSION)
  POSTGRES_IMAGE           PostgreSQL image of the Clusters (default: the operator's)
  HELM_TIMEOUT             --timeout of helm --wait (default $HELM_TIMEOUT)
  INVOICE_HOST             host of invoice-app's Ingress (default $INVOICE_HOST)
  PROXY_TIMEOUT_SECS       the way in's timeout: HTTPRoute timeouts, or ingress-nginx's proxy
                           read/send timeouts (default $PROXY_TIMEOUT_SECS;
                           a synchronous POST /invoices/pay may take 300 s)
  API_KEY_FILE             where the API key is kept (default \$XDG_STATE_HOME or
                           ~/.local/state, invoice-platform/api-key-<context>)

Needs bash >= 4.4, docker, kind, kubectl, helm, curl, jq, od, base64 and sha256sum or
shasum (with --context: no docker unless --build, no kind unless --load). helm and
kubectl installed by scripts/charts/install-tools.sh are found too.
EOF
}

# ---------------------------------------------------------------- settings
CLUSTER_NAME="${CLUSTER_NAME:-invoice-platform}"
KUBE_CONTEXT="${KUBE_CONTEXT:-}"
IMAGE_REPOSITORY_PREFIX="${IMAGE_REPOSITORY_PREFIX:-invoice-platform}"
IMAGE_TAG="${IMAGE_TAG:-}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
CALICO_VERSION="${CALICO_VERSION:-v3.30.3}"
INGRESS_NGINX_VERSION="${INGRESS_NGINX_VERSION:-controller-v1.14.3}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.8.2}"
CNPG_CHART_VERSION="${CNPG_CHART_VERSION:-0.29.0}"
POSTGRES_IMAGE="${POSTGRES_IMAGE:-}"
HELM_TIMEOUT="${HELM_TIMEOUT:-10m}"
INVOICE_HOST="${INVOICE_HOST:-localhost}"
# Above test.sh's PAY_TIMEOUT (300 s): the proxy must not cut a pay run that the app finishes.
PROXY_TIMEOUT_SECS="${PROXY_TIMEOUT_SECS:-330}"

readonly APPS=(payment-provider invoice-app)
readonly PLATFORM_NAMESPACE=platform
readonly CNPG_NAMESPACE=cnpg-system
readonly CNPG_RELEASE=cnpg
readonly CNPG_CHART_REPO=https://cloudnative-pg.github.io/charts
readonly ENVOY_GATEWAY_NAMESPACE=envoy-gateway-system
# kind: the way in listens on these node ports, mapped to 127.0.0.1:80/443.
readonly NODE_PORT_HTTP=30080 NODE_PORT_HTTPS=30443
# Each app: its namespace, its PostgreSQL cluster (the charts' default
# networkPolicy.database.podLabels name these).
declare -A NAMESPACE=([payment-provider]=payments [invoice-app]=invoices)
declare -A DB_CLUSTER=([payment-provider]=payments-db [invoice-app]=invoices-db)
# Left by earlier versions of this script (static caller tokens); removed by --down.
readonly TOKEN_SECRET_PAYMENTS=payment-provider-caller-tokens
readonly TOKEN_SECRET_INVOICES=invoice-app-payment-provider-token
# invoice-app's API keys (key api-keys: JSON array of digests), as the chart reads them.
readonly API_KEYS_SECRET=invoice-app-api-keys
# payment-provider's API certificate (a kubernetes.io/tls Secret) and the CA invoice-app trusts.
readonly TLS_SECRET=payment-provider-tls
readonly TLS_CA_CONFIGMAP=payment-provider-ca

# helm and kubectl from scripts/charts/install-tools.sh, after anything on PATH.
PATH="$PATH:${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}/bin"

# ---------------------------------------------------------------- arguments
down=false
way_in=gateway
build=""
load=""
push=false
while (($# > 0)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --context)
      [[ $# -ge 2 && -n "$2" ]] || { echo "$PROG: --context needs a context name" >&2; exit 2; }
      KUBE_CONTEXT="$2"
      shift
      ;;
    --context=*) KUBE_CONTEXT="${1#--context=}" ;;
    --build) build=true ;;
    --skip-build | --no-build) build=false ;;
    --push) push=true ;;
    --load) load=true ;;
    --no-load) load=false ;;
    --down) down=true ;;
    --gateway) way_in=gateway ;;
    --ingress) way_in=ingress ;;
    *)
      echo "$PROG: unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

API_KEY_FILE="${API_KEY_FILE:-}"
if [[ -n "$KUBE_CONTEXT" ]]; then
  use_kind=false
  context="$KUBE_CONTEXT"
  build="${build:-false}"
  load="${load:-false}"
else
  use_kind=true
  context="kind-$CLUSTER_NAME"
  build="${build:-true}"
  load="${load:-true}"
fi
API_KEY_FILE="${API_KEY_FILE:-${XDG_STATE_HOME:-$HOME/.local/state}/invoice-platform/api-key-$context}"

# ---------------------------------------------------------------- helpers
if [[ -t 1 ]]; then
  bold=$'\e[1m' red=$'\e[31m' reset=$'\e[0m'
else
  bold="" red="" reset=""
fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
info() { printf '    %s\n' "$*"; }
die() {
  printf '%s%s: %s%s\n' "$red" "$PROG" "$*" "$reset" >&2
  exit 1
}

kctl() { kubectl --context "$context" "$@"; }
hlm() { helm --kube-context "$context" "$@"; }

tmp="$(mktemp -d)"
chmod 700 "$tmp"
trap 'rm -rf "$tmp"' EXIT

# retry ATTEMPTS DELAY CMD...: for steps that race a controller becoming ready.
retry() {
  local attempts="$1" delay="$2" n=1
  shift 2
  until "$@"; do
    ((n >= attempts)) && return 1
    info "retrying in ${delay}s ($n/$attempts): $*" >&2
    sleep "$delay"
    n=$((n + 1))
  done
}

check_tools() {
  local need=(kubectl helm curl jq od base64 awk)
  if ! $down; then need+=(openssl); fi
  if command -v sha256sum >/dev/null 2>&1; then need+=(sha256sum); else need+=(shasum); fi
  if $use_kind; then
    need+=(kind docker)
  else
    if ! $down && $build; then need+=(docker); fi
    if ! $down && $load; then need+=(kind docker); fi
  fi
  require_tools "${need[@]}"
  if [[ " ${need[*]} " == *" docker "* ]] && ! docker info >/dev/null 2>&1; then
    die "docker is installed but its daemon is not reachable (is it running? may this user use it?)"
  fi
}

sha256_hex() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | awk '{print $1}'; else shasum -a 256 | awk '{print $1}'; fi
}

kind_cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; }

# helm_release_status RELEASE NAMESPACE: deployed, failed, pending-install, ... or empty.
helm_release_status() { { hlm status "$1" -n "$2" 2>/dev/null || true; } | awk '/^STATUS:/ { print $2 }'; }

# helm_upgrade RELEASE NAMESPACE CHART ARGS...: upgrade --install --wait. Clears an
# install left pending by an interrupted run, and retries once when an admission
# webhook (ingress-nginx, CloudNativePG) was not answering yet.
helm_upgrade() {
  local release="$1" ns="$2" chart="$3" status
  shift 3
  status="$(helm_release_status "$release" "$ns")"
  if [[ "$status" == pending-install ]]; then
    info "release $release was left pending-install by an interrupted run: removing it first"
    hlm uninstall "$release" -n "$ns" --wait >/dev/null
  elif [[ "$status" == pending-* ]]; then
    die "release $release in $ns is $status (another helm operation running, or interrupted); fix with: helm rollback $release -n $ns"
  fi
  local attempt
  for attempt in 1 2 3 4 5; do
    if hlm upgrade --install "$release" "$chart" -n "$ns" --wait --timeout "$HELM_TIMEOUT" "$@" >"$tmp/helm.out" 2>&1; then
      info "$release: $(awk '/^STATUS:|^REVISION:/ { printf "%s ", $0 }' "$tmp/helm.out")"
      return 0
    fi
    if ((attempt < 5)) && grep -q 'failed calling webhook' "$tmp/helm.out"; then
      info "an admission webhook was not ready; retrying in 15s"
      sleep 15
      continue
    fi
    cat "$tmp/helm.out" >&2
    die "helm upgrade --install $release failed"
  done
}

# ---------------------------------------------------------------- cluster (kind)
create_kind_cluster() {
  step "kind cluster $CLUSTER_NAME"
  if kind_cluster_exists; then
    info "reusing the existing cluster"
  else
    cat >"$tmp/kind.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # kindnet enforces no NetworkPolicy: Calico replaces it.
  disableDefaultCNI: true
  # Calico's default IP pool.
  podSubnet: 192.168.0.0/16
# The API server refuses Services with spec.externalIPs (CVE-2020-8554), for every namespace;
# the team namespaces' admission policy says the same. One patch per kubeadm API version (the
# node image decides which kind generates): v1beta4 gives extraArgs as a name/value list.
kubeadmConfigPatches:
  - |
    apiVersion: kubeadm.k8s.io/v1beta3
    kind: ClusterConfiguration
    apiServer:
      extraArgs:
        enable-admission-plugins: NodeRestriction,DenyServiceExternalIPs
  - |
    apiVersion: kubeadm.k8s.io/v1beta4
    kind: ClusterConfiguration
    apiServer:
      extraArgs:
        - name: enable-admission-plugins
          value: NodeRestriction,DenyServiceExternalIPs
nodes:
  - role: control-plane
    kubeadmConfigPatches:
      - |
        kind: InitConfiguration
        nodeRegistration:
          kubeletExtraArgs:
            node-labels: "ingress-ready=true,invoice-platform/node-ports=$NODE_PORT_HTTP"
    # The way in (either) is a NodePort service on these ports; only this machine reaches them.
    extraPortMappings:
      - containerPort: $NODE_PORT_HTTP
        hostPort: 80
        listenAddress: "127.0.0.1"
        protocol: TCP
      - containerPort: $NODE_PORT_HTTPS
        hostPort: 443
        listenAddress: "127.0.0.1"
        protocol: TCP
EOF
    local args=(create cluster --name "$CLUSTER_NAME" --config "$tmp/kind.yaml" --wait 0s)
    if [[ -n "$KIND_NODE_IMAGE" ]]; then args+=(--image "$KIND_NODE_IMAGE"); fi
    kind "${args[@]}"
  fi
  # (Re)writes the context, e.g. when the kubeconfig was reset since the cluster was made.
  kind export kubeconfig --name "$CLUSTER_NAME" >/dev/null 2>&1
  info "kubectl context: $context"
  # A cluster made by an older deploy.sh maps other ports.
  [[ -n "$(kctl get nodes -l "invoice-platform/node-ports=$NODE_PORT_HTTP" -o name 2>/dev/null)" ]] ||
    die "cluster $CLUSTER_NAME maps other host ports (made by an older deploy.sh or elsewhere); remove it with '$PROG --down' and run again"
  # One way in per cluster: both would claim the node ports.
  if [[ "$way_in" == gateway ]] && kctl get namespace ingress-nginx >/dev/null 2>&1; then
    die "cluster $CLUSTER_NAME runs ingress-nginx (made with --ingress); run '$PROG --down' first, or keep --ingress"
  fi
  if [[ "$way_in" == ingress ]] && kctl get namespace gateway-system >/dev/null 2>&1; then
    die "cluster $CLUSTER_NAME runs the Gateway (made without --ingress); run '$PROG --down' first, or drop --ingress"
  fi
}

install_calico() {
  step "Calico $CALICO_VERSION (CNI enforcing NetworkPolicy)"
  # A cluster made elsewhere under the same name runs kindnet; Calico on top would break it.
  if kctl -n kube-system get daemonset kindnet >/dev/null 2>&1; then
    die "cluster $CLUSTER_NAME runs kindnet (it was not created by this script); remove it with '$PROG --down' and run again"
  fi
  # Server-side apply: the CRDs are too large for client-side apply's annotation.
  kctl apply --server-side --force-conflicts \
    -f "https://raw.githubusercontent.com/projectcalico/calico/$CALICO_VERSION/manifests/calico.yaml" >/dev/null
  # Docker hosts often set loose reverse-path filtering, which Felix refuses by default.
  kctl -n kube-system set env daemonset/calico-node FELIX_IGNORELOOSERPF=true >/dev/null
  kctl -n kube-system rollout status daemonset/calico-node --timeout=5m
  kctl -n kube-system rollout status deployment/calico-kube-controllers --timeout=5m
  kctl wait --for=condition=Ready nodes --all --timeout=5m >/dev/null
  kctl -n kube-system rollout status deployment/coredns --timeout=5m
}

install_ingress_nginx() {
  step "ingress-nginx $INGRESS_NGINX_VERSION (kind provider; node ports $NODE_PORT_HTTP/$NODE_PORT_HTTPS)"
  kctl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml" >/dev/null
  # Fixed node ports, the ones kind maps to localhost (keyed by port: a strategic merge).
  kctl -n ingress-nginx patch service ingress-nginx-controller -p \
    "{\"spec\":{\"ports\":[{\"port\":80,\"nodePort\":$NODE_PORT_HTTP},{\"port\":443,\"nodePort\":$NODE_PORT_HTTPS}]}}" >/dev/null
  kctl -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=5m
}

# Envoy Gateway: maintained, Gateway API conformant, runs on kind without a cloud load
# balancer (its proxy Service is a NodePort here, see deploy/kind/gateway.yaml).
install_envoy_gateway() {
  step "Envoy Gateway $ENVOY_GATEWAY_VERSION (Gateway API; node port $NODE_PORT_HTTP)"
  helm_upgrade eg "$ENVOY_GATEWAY_NAMESPACE" oci://docker.io/envoyproxy/gateway-helm \
    --version "$ENVOY_GATEWAY_VERSION" --create-namespace
  kctl -n "$ENVOY_GATEWAY_NAMESPACE" rollout status deployment/envoy-gateway --timeout=5m
  # The controller's webhook may still be starting right after its install.
  retry 12 5 kctl apply -f "$ROOT/deploy/kind/gateway.yaml" >/dev/null ||
    die "could not create the Gateway (is Envoy Gateway running?)"
  kctl wait --for=condition=Programmed gateway/gateway -n gateway-system --timeout=5m >/dev/null ||
    die "the Gateway gateway-system/gateway was not programmed"
}

# ---------------------------------------------------------------- images
declare -A image_tag=()

build_images() {
  local app revision source_url build_flags=()
  # The classic builder knows no attestation flags; BuildKit (buildx) takes them.
  if docker buildx version >/dev/null 2>&1; then build_flags=(--provenance=false --sbom=false); fi
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  source_url="$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)"
  for app in "${APPS[@]}"; do
    step "Building image of $app"
    local repo="$IMAGE_REPOSITORY_PREFIX/$app"
    # No provenance/SBOM attestations: with the containerd image store they make the image
    # an index whose attestation blobs `kind load` cannot find ("content digest not found").
    docker build "${build_flags[@]}" --build-arg "APP=$app" --build-arg "REVISION=$revision" \
      --build-arg "SOURCE=$source_url" -t "$repo:latest-build" "$ROOT"
    if [[ -n "$IMAGE_TAG" ]]; then
      image_tag[$app]="$IMAGE_TAG"
    else
      # Tag by content: rebuilding unchanged sources keeps the tag, so helm sees no change.
      local id
      id="$(docker image inspect --format '{{.Id}}' "$repo:latest-build")"
      id="${id#sha256:}"
      image_tag[$app]="dev-${id:0:12}"
    fi
    docker tag "$repo:latest-build" "$repo:${image_tag[$app]}"
    info "$repo:${image_tag[$app]}"
    if $push; then
      docker push "$repo:${image_tag[$app]}"
    fi
  done
}

use_existing_images() {
  local app
  for app in "${APPS[@]}"; do
    image_tag[$app]="$IMAGE_TAG"
  done
  if $load; then
    for app in "${APPS[@]}"; do
      docker image inspect "$IMAGE_REPOSITORY_PREFIX/$app:$IMAGE_TAG" >/dev/null 2>&1 ||
        die "image $IMAGE_REPOSITORY_PREFIX/$app:$IMAGE_TAG not found locally; build it or drop --skip-build"
    done
  fi
}

load_images() {
  local kind_name="$CLUSTER_NAME" app
  if ! $use_kind; then
    [[ "$context" == kind-* ]] || die "--load needs a kind context (kind-<cluster>), not '$context'"
    kind_name="${context#kind-}"
  fi
  step "Loading images into kind cluster $kind_name"
  # Through an archive: `docker save` reads either image store (classic or containerd),
  # where `kind load docker-image` fails on the containerd store.
  for app in "${APPS[@]}"; do
    docker save -o "$tmp/$app.tar" "$IMAGE_REPOSITORY_PREFIX/$app:${image_tag[$app]}"
    kind load image-archive --name "$kind_name" "$tmp/$app.tar"
    rm -f "$tmp/$app.tar"
  done
}

# ---------------------------------------------------------------- platform
cnpg_operator_namespace=""

install_cnpg_operator() {
  step "CloudNativePG operator"
  if [[ -z "$(helm_release_status "$CNPG_RELEASE" "$CNPG_NAMESPACE")" ]] &&
    kctl get crd clusters.postgresql.cnpg.io >/dev/null 2>&1; then
    info "already installed (not by this script): leaving it as it is"
  else
    helm_upgrade "$CNPG_RELEASE" "$CNPG_NAMESPACE" cloudnative-pg \
      --repo "$CNPG_CHART_REPO" --version "$CNPG_CHART_VERSION" --create-namespace
  fi
  cnpg_operator_namespace="$(kctl get deployment -A -l app.kubernetes.io/name=cloudnative-pg \
    -o jsonpath='{.items[0].metadata.namespace}' 2>/dev/null || true)"
  cnpg_operator_namespace="${cnpg_operator_namespace:-$CNPG_NAMESPACE}"
  info "operator runs in namespace $cnpg_operator_namespace"
}

install_team_namespaces() {
  local team
  for team in invoices payments; do
    step "Team namespace $team (charts/team-namespace, release team-$team)"
    # The team's values file sets the label policy (which ServiceAccount may wear the
    # app's label) that the other team's NetworkPolicies rely on.
    helm_upgrade "team-$team" "$PLATFORM_NAMESPACE" "$ROOT/charts/team-namespace" --create-namespace \
      -f "$ROOT/charts/team-namespace/ci/$team-values.yaml"
  done
}

# The Kubernetes API as the CNPG instance manager reaches it: the Service IP (443)
# and, since policies match after the Service's DNAT on most CNIs, its endpoints.
api_server_peers() {
  local service_ip ips port ip
  service_ip="$(kctl get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')"
  ips="$(kctl get endpointslices -n default -l kubernetes.io/service-name=kubernetes \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{"\n"}{end}')"
  port="$(kctl get endpointslices -n default -l kubernetes.io/service-name=kubernetes \
    -o jsonpath='{.items[0].ports[0].port}')"
  [[ -n "$ips" && -n "$port" ]] || die "could not read the Kubernetes API endpoints (endpointslices in default)"
  api_ports=("443" "$port")
  api_cidrs=("$service_ip/32")
  while IFS= read -r ip; do
    [[ -z "$ip" ]] && continue
    if [[ "$ip" == *:* ]]; then api_cidrs+=("$ip/128"); else api_cidrs+=("$ip/32"); fi
  done <<<"$ips"
  # The same addresses for payment-provider (token keys) and the databases (instance manager).
  jq -n --argjson cidrs "$(printf '%s\n' "${api_cidrs[@]}" | jq -R . | jq -s .)" \
    --argjson ports "$(printf '%s\n' "${api_ports[@]}" | sort -un | jq -R 'tonumber' | jq -s .)" \
    '{cidrs: $cidrs, ports: $ports}' >"$tmp/api-server.json"
  jq '{apiServer: .}' "$tmp/api-server.json" >"$tmp/api-server-values.json"
}

# database_cluster APP: the team's PostgreSQL from charts/team-database (a CloudNativePG
# Cluster and the NetworkPolicy it needs in the default-deny namespace), with the API
# server's addresses read from this cluster.
database_cluster() {
  local app="$1" ns="${NAMESPACE[$1]}" cluster="${DB_CLUSTER[$1]}" extra=()
  step "PostgreSQL cluster $ns/$cluster (charts/team-database, release $cluster)"
  if [[ -n "$POSTGRES_IMAGE" ]]; then extra+=(--set-string "imageName=$POSTGRES_IMAGE"); fi
  helm_upgrade "$cluster" "$ns" "$ROOT/charts/team-database" -f "$tmp/api-server-values.json" \
    --set-string "clusterName=$cluster" --set-string "appName=$app" \
    --set-string "operator.namespace=$cnpg_operator_namespace" "${extra[@]}"
}

wait_for_databases() {
  local app ns cluster
  for app in "${APPS[@]}"; do
    ns="${NAMESPACE[$app]}" cluster="${DB_CLUSTER[$app]}"
    step "Waiting for PostgreSQL $ns/$cluster"
    if ! kctl wait --for=condition=Ready "cluster.postgresql.cnpg.io/$cluster" -n "$ns" --timeout=10m; then
      kctl get pods -n "$ns" -l "cnpg.io/cluster=$cluster" -o wide >&2 || true
      kctl get events -n "$ns" --sort-by=.lastTimestamp >&2 || true
      die "PostgreSQL cluster $ns/$cluster did not become ready"
    fi
    retry 30 2 kctl get secret "$cluster-app" -n "$ns" >/dev/null ||
      die "the Secret $ns/$cluster-app was not created"
  done
}

# invoice-app's API key for test.sh: made once on this machine and kept in $API_KEY_FILE
# (mode 600); the cluster gets its SHA-256 alone, in the form API_KEYS takes. Written
# through files, never command-line arguments.
api_key_secret() {
  step "invoice-app API key"
  local key digest
  mkdir -p "$(dirname "$API_KEY_FILE")"
  if [[ -s "$API_KEY_FILE" ]]; then
    key="$(cat "$API_KEY_FILE")"
    info "reusing the key in $API_KEY_FILE"
  else
    key="ip_$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    (umask 077 && printf '%s' "$key" >"$API_KEY_FILE")
    info "generated a new key into $API_KEY_FILE"
  fi
  digest="$(printf '%s' "$key" | sha256_hex)"
  [[ "$digest" =~ ^[0-9a-f]{64}$ ]] || die "could not hash the API key"
  jq -n --arg sha "$digest" \
    '[{client: "deploy-test", scopes: ["invoices:read", "invoices:write", "invoices:pay"], sha256: $sha}]' \
    >"$tmp/api-keys.json"
  kctl create secret generic "$API_KEYS_SECRET" -n invoices \
    --from-file=api-keys="$tmp/api-keys.json" --dry-run=client -o yaml |
    kctl label --local -f - -o yaml app.kubernetes.io/managed-by=deploy.sh |
    kctl apply -f - >/dev/null
}

# payment-provider's API over TLS: a CA made here signs the certificate of the Service's names;
# the CA's key is thrown away at once. Secret payments/$TLS_SECRET holds the certificate and
# key (and the CA as ca.crt, which the chart's helm test trusts); ConfigMap
# invoices/$TLS_CA_CONFIGMAP holds the CA that invoice-app trusts. Both are kept across runs;
# delete both to start again (the apps read the new files, no restart). On a real cluster
# use cert-manager instead: the charts' tls.certManager and paymentProvider.caBundle.
provider_tls() {
  step "payment-provider's TLS certificate"
  if [[ -n "$(kctl get secret "$TLS_SECRET" -n payments -o name --ignore-not-found 2>/dev/null)" &&
    -n "$(kctl get configmap "$TLS_CA_CONFIGMAP" -n invoices -o name --ignore-not-found 2>/dev/null)" ]]; then
    info "reusing Secret payments/$TLS_SECRET and ConfigMap invoices/$TLS_CA_CONFIGMAP"
    return
  fi
  local dir="$tmp/tls" host="payment-provider.payments.svc"
  mkdir -p "$dir"
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=invoice-platform payments CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt"
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout "$dir/tls.key" -out "$dir/tls.csr"
    printf '%s\n' "subjectAltName=DNS:payment-provider,DNS:payment-provider.payments,DNS:$host,DNS:$host.cluster.local" \
      basicConstraints=CA:FALSE keyUsage=digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >"$dir/ext"
    openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -days 825 \
      -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -extfile "$dir/ext" -out "$dir/tls.crt"
    rm -f "$dir/ca.key"
  ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; die "openssl could not make the certificate"; }
  kctl create secret generic "$TLS_SECRET" -n payments --type=kubernetes.io/tls \
    --from-file=tls.crt="$dir/tls.crt" --from-file=tls.key="$dir/tls.key" --from-file=ca.crt="$dir/ca.crt" \
    --dry-run=client -o yaml |
    kctl label --local -f - -o yaml app.kubernetes.io/managed-by=deploy.sh |
    kctl apply -f - >/dev/null
  kctl create configmap "$TLS_CA_CONFIGMAP" -n invoices --from-file=ca.crt="$dir/ca.crt" \
    --dry-run=client -o yaml |
    kctl label --local -f - -o yaml app.kubernetes.io/managed-by=deploy.sh |
    kctl apply -f - >/dev/null
  info "Secret payments/$TLS_SECRET and ConfigMap invoices/$TLS_CA_CONFIGMAP (a CA made here, its key discarded)"
}

image_args() {
  local app="$1"
  printf '%s\n' --set-string "image.repository=$IMAGE_REPOSITORY_PREFIX/$app"
  if [[ -n "${image_tag[$app]:-}" ]]; then
    printf '%s\n' --set-string "image.tag=${image_tag[$app]}"
  fi
}

install_apps() {
  local args
  step "payment-provider (charts/payment-provider in payments)"
  # Callers by workload identity (the chart's default: invoice-app's ServiceAccount); the
  # default-deny namespace lets it reach the API server for the token keys.
  jq '{networkPolicy: {apiServer: .}}' "$tmp/api-server.json" >"$tmp/payment-provider-values.json"
  mapfile -t args < <(image_args payment-provider)
  helm_upgrade payment-provider payments "$ROOT/charts/payment-provider" "${args[@]}" \
    -f "$tmp/payment-provider-values.json" \
    --set-string "database.existingSecret.name=${DB_CLUSTER[payment-provider]}-app" \
    --set-string "database.existingSecret.key=uri" \
    --set-string "tls.secretName=$TLS_SECRET"

  step "invoice-app (charts/invoice-app in invoices, way in: $way_in)"
  local way_in_values
  if [[ "$way_in" == ingress ]]; then
    # ingress-nginx reads its timeouts from annotations; 60 s by default would cut a
    # synchronous pay run.
    way_in_values="$(jq -n --arg host "$INVOICE_HOST" --arg t "$PROXY_TIMEOUT_SECS" '{
      httpRoute: {enabled: false},
      ingress: {enabled: true, className: "nginx", host: $host, annotations: {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": $t,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": $t}}}')"
  else
    # The HTTPRoute's timeouts (Envoy's default is 15 s).
    way_in_values="$(jq -n --arg host "$INVOICE_HOST" --arg t "${PROXY_TIMEOUT_SECS}s" '{
      httpRoute: {enabled: true, hostnames: [$host], timeouts: {request: $t, backendRequest: $t}},
      ingress: {enabled: false}}')"
    if $use_kind; then
      # Envoy Gateway runs the proxies in its own namespace, labelled with their Gateway.
      way_in_values="$(jq --arg ns "$ENVOY_GATEWAY_NAMESPACE" '. + {networkPolicy: {gatewayProxies: [{
        namespace: $ns, podLabels: {
          "app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy",
          "gateway.envoyproxy.io/owning-gateway-name": "gateway",
          "gateway.envoyproxy.io/owning-gateway-namespace": "gateway-system"}}]}}' <<<"$way_in_values")"
    fi
  fi
  jq -n --argjson way_in "$way_in_values" \
    '$way_in + {apiAuth: {existingSecret: {name: "'"$API_KEYS_SECRET"'", key: "api-keys"}}}' \
    >"$tmp/invoice-app-values.json"
  mapfile -t args < <(image_args invoice-app)
  helm_upgrade invoice-app invoices "$ROOT/charts/invoice-app" "${args[@]}" \
    -f "$tmp/invoice-app-values.json" \
    --set-string "database.existingSecret.name=${DB_CLUSTER[invoice-app]}-app" \
    --set-string "database.existingSecret.key=uri" \
    --set-string "paymentProvider.url=https://payment-provider.payments.svc.cluster.local:8080" \
    --set-string "paymentProvider.caBundle.configMap=$TLS_CA_CONFIGMAP"
}

# The URL test.sh should use, once the ingress answers.
public_url() {
  if $use_kind; then
    echo "http://localhost"
    return
  fi
  local address
  if [[ "$way_in" == ingress ]]; then
    address="$(kctl get ingress -n invoices -l app.kubernetes.io/name=invoice-app \
      -o jsonpath='{.items[0].status.loadBalancer.ingress[0].ip}{.items[0].status.loadBalancer.ingress[0].hostname}' 2>/dev/null || true)"
  else
    address="$(kctl get gateway gateway -n gateway-system -o jsonpath='{.status.addresses[0].value}' 2>/dev/null || true)"
  fi
  if [[ -n "$address" ]]; then echo "http://$address"; else echo ""; fi
}

wait_for_way_in() {
  local url="$1" deadline=$((SECONDS + 180)) code=""
  step "Waiting for invoice-app behind the $way_in at $url"
  # Only the API paths are routed; the key goes in a header file, off the command line.
  (umask 077 && printf 'Authorization: Bearer %s\n' "$(cat "$API_KEY_FILE")" >"$tmp/auth.header")
  while ((SECONDS < deadline)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 2 --max-time 5 \
      -H "@$tmp/auth.header" "$url/invoices?limit=1" || true)"
    [[ "$code" == 200 ]] && { info "GET $url/invoices?limit=1: 200"; return 0; }
    sleep 3
  done
  die "invoice-app did not answer through the $way_in at $url (last status: ${code:-none})"
}

# ---------------------------------------------------------------- down
tear_down() {
  if $use_kind; then
    step "Deleting kind cluster $CLUSTER_NAME"
    if kind_cluster_exists; then kind delete cluster --name "$CLUSTER_NAME"; else info "no such cluster"; fi
    return
  fi
  step "Removing the platform from context $context"
  local release ns
  for release in invoice-app:invoices payment-provider:payments; do
    ns="${release#*:}" release="${release%%:*}"
    if [[ -n "$(helm_release_status "$release" "$ns")" ]]; then
      hlm uninstall "$release" -n "$ns" --wait
    fi
  done
  for app in "${APPS[@]}"; do
    ns="${NAMESPACE[$app]}"
    if [[ -n "$(helm_release_status "${DB_CLUSTER[$app]}" "$ns")" ]]; then
      hlm uninstall "${DB_CLUSTER[$app]}" -n "$ns" --wait
    fi
    # What an older deploy.sh applied without helm.
    kctl delete cluster.postgresql.cnpg.io "${DB_CLUSTER[$app]}" -n "$ns" --ignore-not-found --wait=true 2>/dev/null || true
    kctl delete networkpolicy "${DB_CLUSTER[$app]}-cnpg" -n "$ns" --ignore-not-found >/dev/null 2>&1 || true
  done
  kctl delete secret "$TOKEN_SECRET_INVOICES" -n invoices --ignore-not-found >/dev/null 2>&1 || true
  kctl delete secret "$TOKEN_SECRET_PAYMENTS" -n payments --ignore-not-found >/dev/null 2>&1 || true
  kctl delete secret "$API_KEYS_SECRET" -n invoices --ignore-not-found >/dev/null 2>&1 || true
  kctl delete secret "$TLS_SECRET" -n payments --ignore-not-found >/dev/null 2>&1 || true
  kctl delete configmap "$TLS_CA_CONFIGMAP" -n invoices --ignore-not-found >/dev/null 2>&1 || true
  for release in team-invoices team-payments; do
    if [[ -n "$(helm_release_status "$release" "$PLATFORM_NAMESPACE")" ]]; then
      hlm uninstall "$release" -n "$PLATFORM_NAMESPACE" --wait
    fi
  done
  # team-namespace keeps its namespaces on uninstall (data safety); here removal is the intent.
  # Waited for: a re-run straight after must not meet namespaces still terminating.
  step "Waiting for the namespaces to be deleted"
  kctl delete namespace invoices payments isolation-probe --ignore-not-found --wait=true --timeout=10m
  info "the CloudNativePG operator (release $CNPG_RELEASE in $CNPG_NAMESPACE) is left in place, as other"
  info "workloads may use it; remove it with: helm uninstall $CNPG_RELEASE -n $CNPG_NAMESPACE --kube-context $context"
}

# ---------------------------------------------------------------- main
# Option combinations that cannot work fail here, before minutes of cluster setup.
if ! $down && ! $build && $load && [[ -z "$IMAGE_TAG" ]]; then
  die "loading images without building them needs IMAGE_TAG, the tag of images already built locally (or use --build)"
fi
check_tools

if $down; then
  tear_down
  exit 0
fi

if $use_kind; then
  create_kind_cluster
  install_calico
  if [[ "$way_in" == ingress ]]; then install_ingress_nginx; else install_envoy_gateway; fi
else
  step "Using existing cluster, kubectl context $context"
  kctl cluster-info >/dev/null 2>&1 || die "kubectl context '$context' does not reach a cluster"
  info "its CNI must enforce NetworkPolicy, and the way in must be there: with --gateway a Gateway"
  info "gateway-system/gateway whose proxies run in gateway-system; with --ingress a controller of"
  info "class 'nginx' in namespace ingress-nginx (else adjust the invoice-app chart's networkPolicy)"
fi

if $build; then build_images; else use_existing_images; fi
if $load; then load_images; fi
if ! $use_kind && $build && ! $push && ! $load; then
  info "note: the images were built locally but neither pushed (--push) nor loaded (--load):"
  info "the cluster must be able to pull $IMAGE_REPOSITORY_PREFIX/<app>:<tag> by itself"
fi

install_cnpg_operator
install_team_namespaces
api_server_peers
for app in "${APPS[@]}"; do database_cluster "$app"; done
wait_for_databases
api_key_secret
provider_tls
install_apps

url="$(public_url)"
if [[ -n "$url" ]]; then wait_for_way_in "$url"; fi

step "Deployed"
info "invoice-app:      ${url:-<the address of your Gateway or ingress controller>} ($way_in)"
info "payment-provider: in-cluster only, https://payment-provider.payments.svc.cluster.local:8080 (CA: ConfigMap invoices/$TLS_CA_CONFIGMAP)"
info ""
info "Check it:   INVOICE_API_TOKEN=\"\$(cat '$API_KEY_FILE')\" ./test.sh ${url:-<URL>}"
info "Isolation:  INVOICE_API_TOKEN=\"\$(cat '$API_KEY_FILE')\" ./test.sh --isolation ${url:-<URL>}"
info "Remove it:  ./deploy.sh --down${KUBE_CONTEXT:+ --context $KUBE_CONTEXT}"
