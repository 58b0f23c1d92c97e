#!/usr/bin/env bash
# End-to-end check of a running invoice-app (local or behind the ingress): pays
# every pending invoice and checks that each one ends paid or failed with a reason.
# With --isolation it also proves, with kubectl, that payment-provider is reachable
# only from invoice-app's pods. Run with --help for details.
set -euo pipefail

# bash and tool checks first, in bash 3.2 syntax (macOS): see scripts/lib/preflight.sh.
# shellcheck source=scripts/lib/preflight.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/preflight.sh"
require_bash

readonly PROG="${0##*/}"

usage() {
  cat <<EOF
Usage: $PROG [--isolation] [BASE_URL]

Checks a running invoice-app end to end:
  1. reachability (GET /invoices?limit=1: through an ingress only the API paths are
     routed, not /healthz or /readyz), failing within seconds if unreachable;
  2. lists the pending invoices (GET /invoices?status=pending, following next_cursor);
     (with none pending, the run must pay nothing, and the table lists all paid ones);
  3. pays them (POST /invoices/pay);
  4. re-reads every invoice that was pending: each must now be 'paid' (with charge_id
     and paid_at) or 'failed' (with a failure_reason). One left 'pending' because the
     run said retry_later is a failure too: a healthy system settles every invoice;
  5. prints the paid invoices as a table.
Exits non-zero on any mismatch, on an HTTP error (the problem+json detail is shown)
or when the app is unreachable.

The API needs a bearer credential with the scopes invoices:read and invoices:pay:
set INVOICE_API_TOKEN to an OAuth2/OIDC access token or an API key of the installation.
A local invoice-app without configured credentials (make run, make demo) takes the
development key: INVOICE_API_TOKEN=dev-only-insecure-api-key.

BASE_URL  invoice-app's base URL; default \$INVOICE_APP_URL, else http://127.0.0.1:8081.
          On the kind cluster of deploy.sh: http://localhost

Options:
  --isolation  also check, with kubectl and the current context (or \$KUBE_CONTEXT),
               that payment-provider is NOT reachable from a pod in another namespace,
               nor from an unlabelled pod in invoice-app's namespace, nor from outside
               (no Ingress/HTTPRoute, ClusterIP Service only, not behind BASE_URL), and
               IS reachable from a pod labelled like invoice-app in its namespace.
  -h, --help   show this help.

Environment:
  INVOICE_API_TOKEN     bearer credential for the API (required by every invoice-app;
                        sent from a file, never on a command line)
  INVOICE_APP_URL       default BASE_URL
  CONNECT_TIMEOUT       seconds to connect (default 3)
  REQUEST_TIMEOUT       seconds per request (default 15)
  PAY_TIMEOUT           seconds for POST /invoices/pay (default 300)
  PAGE_LIMIT            page size when listing (default 100)
  KUBE_CONTEXT          kubectl context for --isolation (default: current context)
  INVOICES_NAMESPACE    default invoices
  PAYMENTS_NAMESPACE    default payments
  PROBE_NAMESPACE       namespace of the outsider probe pod (default isolation-probe)
  PROBE_IMAGE           image with curl and sh for probe pods (default curlimages/curl:8.11.1)

Needs bash >= 4.4, curl and jq (and kubectl for --isolation).
EOF
}

# ---------------------------------------------------------------- settings
CONNECT_TIMEOUT="${CONNECT_TIMEOUT:-3}"
REQUEST_TIMEOUT="${REQUEST_TIMEOUT:-15}"
PAY_TIMEOUT="${PAY_TIMEOUT:-300}"
PAGE_LIMIT="${PAGE_LIMIT:-100}"
INVOICES_NAMESPACE="${INVOICES_NAMESPACE:-invoices}"
PAYMENTS_NAMESPACE="${PAYMENTS_NAMESPACE:-payments}"
PROBE_NAMESPACE="${PROBE_NAMESPACE:-isolation-probe}"
PROBE_IMAGE="${PROBE_IMAGE:-curlimages/curl:8.11.1}"
# An invoice seen 'processing' (claimed by a concurrent run) gets this long to settle.
SETTLE_TIMEOUT="${SETTLE_TIMEOUT:-30}"

isolation=false
base_url=""
while (($# > 0)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --isolation) isolation=true ;;
    -*)
      echo "$PROG: unknown option: $1 (see --help)" >&2
      exit 2
      ;;
    *)
      if [[ -n "$base_url" ]]; then
        echo "$PROG: only one BASE_URL may be given (see --help)" >&2
        exit 2
      fi
      base_url="$1"
      ;;
  esac
  shift
done
base_url="${base_url:-${INVOICE_APP_URL:-http://127.0.0.1:8081}}"
base_url="${base_url%/}"

# ---------------------------------------------------------------- output
if [[ -t 1 ]]; then
  bold=$'\e[1m' red=$'\e[31m' green=$'\e[32m' yellow=$'\e[33m' reset=$'\e[0m'
else
  bold="" red="" green="" yellow="" reset=""
fi
say() { printf '%s\n' "$*"; }
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
ok() { printf '  %sok%s    %s\n' "$green" "$reset" "$*"; }
note() { printf '  %snote%s  %s\n' "$yellow" "$reset" "$*"; }
die() {
  printf '%s%s: FAILED: %s%s\n' "$red" "$PROG" "$*" "$reset" >&2
  exit 1
}

# Problems found on the way; reported together at the end.
problems=()
problem() {
  problems+=("$*")
  printf '  %sFAIL%s  %s\n' "$red" "$reset" "$*"
}

if $isolation; then require_tools curl jq kubectl; else require_tools curl jq; fi

tmp="$(mktemp -d)"
cleanup_actions=()
cleanup() {
  local action
  for action in "${cleanup_actions[@]}"; do
    eval "$action" || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- credential
# curl reads the header from a file in the private temp dir, so the credential never
# shows in the process list.
auth_args=()
if [[ -n "${INVOICE_API_TOKEN:-}" ]]; then
  [[ "$INVOICE_API_TOKEN" != *[[:space:]]* ]] || die "INVOICE_API_TOKEN must not contain spaces or line breaks"
  printf 'Authorization: Bearer %s\n' "$INVOICE_API_TOKEN" >"$tmp/auth.header"
  auth_args=(-H "@$tmp/auth.header")
fi

# ---------------------------------------------------------------- HTTP
# http METHOD PATH [CURL_ARGS...]
# Leaves the body in $tmp/body and the status in $http_status. Dies on a
# transport error or a non-2xx status, showing the problem+json detail.
http_status=""
http() {
  local method="$1" path="$2"
  shift 2
  if ! http_status="$(curl -sS -o "$tmp/body" -w '%{http_code}' -X "$method" \
    --connect-timeout "$CONNECT_TIMEOUT" --max-time "$REQUEST_TIMEOUT" \
    -H 'Accept: application/json' "${auth_args[@]}" "$@" "$base_url$path" 2>"$tmp/curl.err")"; then
    die "$method $base_url$path: $(tr -d '\n' <"$tmp/curl.err")"
  fi
  if [[ "$http_status" == 401 || "$http_status" == 403 ]]; then
    local hint="set INVOICE_API_TOKEN to an access token or API key with the scopes invoices:read and invoices:pay"
    [[ -n "${INVOICE_API_TOKEN:-}" ]] || hint="INVOICE_API_TOKEN is not set: $hint"
    die "$method $base_url$path: HTTP $http_status: $(problem_text "$tmp/body"). $hint"
  fi
  if [[ "$http_status" != 2?? ]]; then
    die "$method $base_url$path: HTTP $http_status: $(problem_text "$tmp/body")"
  fi
}

# The useful part of an error body: problem+json fields when it is one, else its start.
problem_text() {
  local text
  text="$(jq -r 'select(type == "object" and (.title or .detail))
    | [.title, .detail] | map(select(. != null and . != "")) | join(": ")' "$1" 2>/dev/null || true)"
  if [[ -n "$text" ]]; then
    local code
    code="$(jq -r '.code // empty' "$1" 2>/dev/null || true)"
    printf '%s%s' "$text" "${code:+ (code $code)}"
  else
    head -c 300 "$1" | tr '\n' ' '
  fi
}

# Prints TSV rows from stdin as a table aligned on the widest cell of each column.
table() {
  awk -F '\t' '
    { rows[NR] = $0; for (i = 1; i <= NF; i++) if (length($i) > w[i]) w[i] = length($i); if (NF > n) n = NF }
    END {
      for (r = 1; r <= NR; r++) {
        split(rows[r], c, "\t"); line = "  "
        for (i = 1; i <= n; i++) line = line sprintf(i < n ? "%-" w[i] "s  " : "%s", c[i])
        print line
      }
    }'
}

# ---------------------------------------------------------------- 1. reachability
step "invoice-app at $base_url"
if ! curl -sS -o /dev/null --connect-timeout "$CONNECT_TIMEOUT" --max-time 5 \
  "$base_url/invoices" 2>"$tmp/curl.err"; then
  die "invoice-app is unreachable at $base_url ($(tr -d '\n' <"$tmp/curl.err")).
  Start it (cargo run -p invoice-app, listening on 127.0.0.1:8081) or deploy it
  (./deploy.sh, then use http://localhost), or pass its URL: $PROG BASE_URL"
fi
http GET /invoices -G --data-urlencode limit=1
ok "GET /invoices?limit=1 $http_status"

# ---------------------------------------------------------------- 2. pending invoices
step "Listing pending invoices"
# list_invoices STATUS OUTFILE: every invoice with that status, one JSON per line;
# sets $pages to the number of pages read.
pages=0
list_invoices() {
  local status="$1" out="$2" cursor="" previous=""
  pages=0
  : >"$out"
  while :; do
    local args=(-G --data-urlencode "status=$status" --data-urlencode "limit=$PAGE_LIMIT")
    [[ -n "$cursor" ]] && args+=(--data-urlencode "cursor=$cursor")
    http GET /invoices "${args[@]}"
    jq -e '(.items | type == "array") and has("next_cursor")' "$tmp/body" >/dev/null ||
      die "GET /invoices: expected {\"items\": [...], \"next_cursor\": ...}, got: $(head -c 300 "$tmp/body")"
    jq -c '.items[]' "$tmp/body" >>"$out"
    pages=$((pages + 1))
    previous="$cursor"
    cursor="$(jq -r '.next_cursor // empty' "$tmp/body")"
    [[ -z "$cursor" ]] && break
    [[ "$cursor" == "$previous" ]] && die "GET /invoices: next_cursor did not advance (page $pages)"
    ((pages < 10000)) || die "GET /invoices: more than 10000 pages; pagination does not end"
  done
}

list_invoices pending "$tmp/pending.jsonl"
wrong="$(jq -r 'select(.status != "pending") | "\(.id) (\(.status))"' "$tmp/pending.jsonl")"
[[ -z "$wrong" ]] || die "GET /invoices?status=pending returned invoices that are not pending: $wrong"
dupes="$(jq -r '.id' "$tmp/pending.jsonl" | sort | uniq -d)"
[[ -z "$dupes" ]] || die "GET /invoices listed these invoices on more than one page: $dupes"
mapfile -t pending_ids < <(jq -r '.id' "$tmp/pending.jsonl")
ok "${#pending_ids[@]} pending invoice(s) in $pages page(s) of at most $PAGE_LIMIT"

if ((${#pending_ids[@]} == 0)); then
  # Nothing to pay (e.g. a second run). Inventing invoices would bill real customers, so
  # this only checks that a run over nothing charges nothing and lists what is paid.
  note "no invoice is pending: checking that an empty run charges nothing"
fi

# ---------------------------------------------------------------- 3. pay
step "Paying (POST /invoices/pay)"
REQUEST_TIMEOUT="$PAY_TIMEOUT" http POST /invoices/pay
cp "$tmp/body" "$tmp/pay.json"
jq -e '(.status | type == "string") and (.summary | type == "object")
  and (.paid | type == "array") and (.failed | type == "array") and (.retry_later | type == "array")' \
  "$tmp/pay.json" >/dev/null ||
  die "POST /invoices/pay: unexpected response: $(head -c 300 "$tmp/pay.json")"
run_status="$(jq -r '.status' "$tmp/pay.json")"
[[ "$run_status" == completed ]] || problem "pay run $(jq -r '.run_id' "$tmp/pay.json") has status '$run_status', expected 'completed'"
ok "run $(jq -r '.run_id' "$tmp/pay.json"): $(jq -r '.summary | "paid \(.paid), failed \(.failed), retry_later \(.retry_later)"' "$tmp/pay.json")"

counts_agree="$(jq -r '[(.summary.paid == (.paid | length)), (.summary.failed == (.failed | length)),
  (.summary.retry_later == (.retry_later | length))] | all' "$tmp/pay.json")"
[[ "$counts_agree" == true ]] || problem "pay run summary counts do not match its paid/failed/retry_later lists"
while IFS=$'\t' read -r id reason; do
  problem "invoice $id was left for a later run (retry_later: $reason); a healthy system settles every invoice"
done < <(jq -r '.retry_later[] | [.invoice_id, (.reason // "no reason given")] | @tsv' "$tmp/pay.json")
while IFS= read -r id; do
  problem "pay response lists invoice $id as failed without a failure_reason"
done < <(jq -r '.failed[] | select((.failure_reason // "") == "") | .id' "$tmp/pay.json")

# ---------------------------------------------------------------- 4. re-read
step "Re-reading the ${#pending_ids[@]} invoice(s) that were pending"
jq -r '(.paid[] | [.id, "paid"]), (.failed[] | [.id, "failed"]), (.retry_later[] | [.invoice_id, "retry_later"]) | @tsv' \
  "$tmp/pay.json" >"$tmp/outcomes.tsv"
: >"$tmp/final.jsonl"
settled=0
for id in "${pending_ids[@]}"; do
  outcome="$(awk -F '\t' -v id="$id" '$1 == id { print $2; exit }' "$tmp/outcomes.tsv")"
  deadline=$((SECONDS + SETTLE_TIMEOUT))
  while :; do
    http GET "/invoices/$id"
    status="$(jq -r '.status' "$tmp/body")"
    # Claimed by a concurrent pay run (the schedule, another replica): let it finish.
    [[ "$status" == processing && $SECONDS -lt $deadline ]] || break
    sleep 1
  done
  jq -c . "$tmp/body" >>"$tmp/final.jsonl"
  case "$status" in
    paid)
      if jq -e '(.charge_id // "") != "" and (.paid_at // "") != ""' "$tmp/body" >/dev/null; then
        settled=$((settled + 1))
      else
        problem "invoice $id is paid but has no charge_id or paid_at"
      fi
      ;;
    failed)
      if jq -e '(.failure_reason // "") != ""' "$tmp/body" >/dev/null; then
        settled=$((settled + 1))
      else
        problem "invoice $id failed without a failure_reason"
      fi
      ;;
    pending)
      if [[ "$outcome" == retry_later ]]; then
        problem "invoice $id is still pending: the pay run left it for a later run (see retry_later above)"
      else
        problem "invoice $id is still pending, but the pay run did not list it under retry_later"
      fi
      ;;
    *) problem "invoice $id has status '$status' after the pay run, expected paid or failed" ;;
  esac
  # What the pay response said must be what the invoice now shows.
  if [[ ("$outcome" == paid || "$outcome" == failed) && "$status" != "$outcome" ]]; then
    problem "invoice $id: the pay response says '$outcome' but GET /invoices/$id says '$status'"
  elif [[ -z "$outcome" && ("$status" == paid || "$status" == failed) ]]; then
    note "invoice $id was settled ($status) by another pay run meanwhile"
  fi
done
ok "$settled of ${#pending_ids[@]} invoice(s) settled as paid or failed"

# ---------------------------------------------------------------- 5. report
step "Paid invoices"
{
  printf 'ID\tCUSTOMER\tAMOUNT\tCHARGE\tPAID AT\n'
  jq -r 'select(.status == "paid") | [.id, .customer_id, .amount_display, (.charge_id // "-"), (.paid_at // "-")] | @tsv' \
    "$tmp/final.jsonl"
} >"$tmp/paid.tsv"
if ((${#pending_ids[@]} == 0)); then
  list_invoices paid "$tmp/all-paid.jsonl"
  {
    printf 'ID\tCUSTOMER\tAMOUNT\tCHARGE\tPAID AT\n'
    jq -r '[.id, .customer_id, .amount_display, (.charge_id // "-"), (.paid_at // "-")] | @tsv' "$tmp/all-paid.jsonl"
  } >"$tmp/paid.tsv"
  [[ "$(jq -r '.summary.paid' "$tmp/pay.json")" == 0 ]] || problem "a run with nothing pending reported payments"
fi
if (($(wc -l <"$tmp/paid.tsv") > 1)); then table <"$tmp/paid.tsv"; else say "  (none)"; fi

if [[ "$(jq -s 'any(.[]; .status == "failed")' "$tmp/final.jsonl")" == true ]]; then
  step "Failed invoices (declined; kept with their reason)"
  {
    printf 'ID\tCUSTOMER\tAMOUNT\tREASON\n'
    jq -r 'select(.status == "failed") | [.id, .customer_id, .amount_display, (.failure_reason // "-")] | @tsv' \
      "$tmp/final.jsonl"
  } | table
fi

# ---------------------------------------------------------------- isolation
kubectl_() {
  if [[ -n "${KUBE_CONTEXT:-}" ]]; then
    kubectl --context "$KUBE_CONTEXT" "$@"
  else
    kubectl "$@"
  fi
}

# start_probe NAMESPACE NAME URL LABELS_JSON: a one-shot curl pod that prints
# "exit=<curl exit code> http=<status>". It passes Pod Security 'restricted', and
# a readiness gate nobody sets keeps it out of every Service's endpoints even
# when it carries invoice-app's labels.
start_probe() {
  local ns="$1" name="$2" url="$3" labels="$4"
  jq -n --arg ns "$ns" --arg name "$name" --arg url "$url" --arg image "$PROBE_IMAGE" \
    --arg run "$probe_run" --argjson labels "$labels" '{
    apiVersion: "v1", kind: "Pod",
    metadata: {name: $name, namespace: $ns,
      labels: ($labels + {"invoice-platform.test/probe": $run, "app.kubernetes.io/managed-by": "test.sh"})},
    spec: {
      restartPolicy: "Never",
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      readinessGates: [{conditionType: "invoice-platform.test/never-ready"}],
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532,
        seccompProfile: {type: "RuntimeDefault"}},
      containers: [{
        name: "curl", image: $image,
        env: [{name: "URL", value: $url}],
        command: ["sh", "-c",
          "code=$(curl -s --insecure -o /dev/null -w \"%{http_code}\" --connect-timeout 5 --max-time 8 \"$URL\"); echo \"exit=$? http=$code\""],
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
          capabilities: {drop: ["ALL"]}},
        resources: {requests: {cpu: "10m", memory: "16Mi"}, limits: {cpu: "100m", memory: "32Mi"}}
      }]
    }}' >"$tmp/$name.json"
  kubectl_ apply -f "$tmp/$name.json" >/dev/null
}

# probe_result NAMESPACE NAME: waits for the probe and prints "exit=N http=NNN",
# or returns 1 when the pod could not run.
probe_result() {
  local ns="$1" name="$2" phase="" deadline=$((SECONDS + 180))
  while ((SECONDS < deadline)); do
    phase="$(kubectl_ get pod -n "$ns" "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
    sleep 2
  done
  if [[ "$phase" != Succeeded ]]; then
    kubectl_ get pod -n "$ns" "$name" -o jsonpath='{range .status.containerStatuses[*]}{.state}{"\n"}{end}' 2>/dev/null >&2 || true
    return 1
  fi
  kubectl_ logs -n "$ns" "$name" 2>/dev/null | grep -Eo 'exit=[0-9]+ http=[0-9]+' | tail -n1
}

# expect_probe blocked|reachable DESCRIPTION NAMESPACE NAME
expect_probe() {
  local want="$1" what="$2" ns="$3" name="$4" result
  if ! result="$(probe_result "$ns" "$name")" || [[ -z "$result" ]]; then
    problem "$what: the probe pod $ns/$name did not run to completion (image $PROBE_IMAGE); inconclusive"
    return
  fi
  local exit_code="${result#exit=}" http_code="${result##*http=}"
  exit_code="${exit_code%% *}"
  case "$want" in
    reachable)
      if [[ "$exit_code" == 0 && "$http_code" == 2?? ]]; then
        ok "$what: reachable (HTTP $http_code)"
      else
        problem "$what: expected reachable, got curl exit $exit_code, HTTP $http_code"
      fi
      ;;
    blocked)
      # 28: timed out (packets dropped by the policy); 7: connection refused/reset.
      if [[ "$http_code" != 000 ]]; then
        problem "$what: expected blocked, but payment-provider answered HTTP $http_code"
      elif [[ "$exit_code" == 28 || "$exit_code" == 7 ]]; then
        ok "$what: blocked (curl exit $exit_code)"
      else
        problem "$what: inconclusive: curl exit $exit_code (6 means DNS failed) rather than a blocked connection"
      fi
      ;;
  esac
}

if $isolation; then
  step "Isolation of payment-provider (kubectl context: ${KUBE_CONTEXT:-$(kubectl config current-context 2>/dev/null || echo '?')})"
  kubectl_ get namespace "$PAYMENTS_NAMESPACE" "$INVOICES_NAMESPACE" >/dev/null ||
    die "namespaces $PAYMENTS_NAMESPACE and $INVOICES_NAMESPACE must exist (deploy first: ./deploy.sh)"

  # From outside: no Service of another type, no route through an ingress or gateway.
  kubectl_ get service -n "$PAYMENTS_NAMESPACE" -l app.kubernetes.io/name=payment-provider -o json >"$tmp/pp-svc.json"
  pp_service="$(jq -r '.items[0].metadata.name // empty' "$tmp/pp-svc.json")"
  [[ -n "$pp_service" ]] || die "no Service labelled app.kubernetes.io/name=payment-provider in $PAYMENTS_NAMESPACE"
  pp_port="$(jq -r '.items[0].spec.ports | (map(select(.name == "http"))[0] // .[0]).port' "$tmp/pp-svc.json")"
  exposed="$(jq -r '.items[] | select(.spec.type != "ClusterIP" or ((.spec.externalIPs // []) | length > 0))
    | "\(.metadata.name) (\(.spec.type))"' "$tmp/pp-svc.json")"
  if [[ -z "$exposed" ]]; then ok "outside: payment-provider Services are ClusterIP only"; else problem "outside: exposed Service(s): $exposed"; fi

  ingresses="$(kubectl_ get ingress -n "$PAYMENTS_NAMESPACE" -o name 2>/dev/null || true)"
  if [[ -z "$ingresses" ]]; then ok "outside: no Ingress in $PAYMENTS_NAMESPACE"; else problem "outside: Ingress in $PAYMENTS_NAMESPACE: $ingresses"; fi

  if kubectl_ get crd httproutes.gateway.networking.k8s.io >/dev/null 2>&1; then
    routes="$(kubectl_ get httproutes -A -o json | jq -r --arg ns "$PAYMENTS_NAMESPACE" '.items[]
      | select(.metadata.namespace == $ns or any(.spec.rules[]?.backendRefs[]?; .namespace == $ns))
      | "\(.metadata.namespace)/\(.metadata.name)"')"
    if [[ -z "$routes" ]]; then ok "outside: no HTTPRoute leads to $PAYMENTS_NAMESPACE"; else problem "outside: HTTPRoute(s) to $PAYMENTS_NAMESPACE: $routes"; fi
  fi

  # Through BASE_URL, the provider's own paths must not be served: it would answer
  # 401 (no token) or 4xx validation errors; the ingress or invoice-app say 404/405.
  code="$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout "$CONNECT_TIMEOUT" --max-time "$REQUEST_TIMEOUT" \
    -X POST -H 'Content-Type: application/json' --data '{}' "$base_url/v1/charges" || true)"
  if [[ "$code" == 404 || "$code" == 405 ]]; then
    ok "outside: POST $base_url/v1/charges is not routed to payment-provider (HTTP $code)"
  else
    problem "outside: POST $base_url/v1/charges answered HTTP $code; expected 404/405 (not routed to payment-provider)"
  fi

  # In the cluster: one-shot curl pods, started together, checked one by one.
  probe_run="$(date +%s)-$$"
  # https when the provider serves TLS (its chart's tls.enabled); the probes prove reachability,
  # not trust, so they do not check the certificate.
  pp_scheme="$(kubectl_ get configmap -n "$PAYMENTS_NAMESPACE" -l app.kubernetes.io/name=payment-provider -o json |
    jq -r 'if (.items[0].data.TLS_CERT_FILE // "") != "" then "https" else "http" end')"
  pp_url="$pp_scheme://$pp_service.$PAYMENTS_NAMESPACE.svc.cluster.local:$pp_port/healthz"

  invoice_labels="$(kubectl_ get deployment -n "$INVOICES_NAMESPACE" -l app.kubernetes.io/name=invoice-app -o json |
    jq -c '.items[0].spec.template.metadata.labels // empty
      | del(."helm.sh/chart", ."app.kubernetes.io/managed-by")')"
  [[ -n "$invoice_labels" ]] || die "no Deployment labelled app.kubernetes.io/name=invoice-app in $INVOICES_NAMESPACE"

  if ! kubectl_ get namespace "$PROBE_NAMESPACE" >/dev/null 2>&1; then
    kubectl_ create namespace "$PROBE_NAMESPACE" >/dev/null
    cleanup_actions+=("kubectl_ delete namespace '$PROBE_NAMESPACE' --wait=false >/dev/null 2>&1")
  fi
  kubectl_ label namespace "$PROBE_NAMESPACE" --overwrite \
    pod-security.kubernetes.io/enforce=restricted >/dev/null
  cleanup_actions+=("kubectl_ delete pod -A -l 'invoice-platform.test/probe=$probe_run' --wait=false >/dev/null 2>&1")

  outsider="probe-outsider-${probe_run//[^0-9a-z]/-}"
  unlabelled="probe-unlabelled-${probe_run//[^0-9a-z]/-}"
  caller="probe-invoice-app-${probe_run//[^0-9a-z]/-}"
  start_probe "$PROBE_NAMESPACE" "$outsider" "$pp_url" '{"app.kubernetes.io/name": "isolation-probe"}'
  start_probe "$INVOICES_NAMESPACE" "$unlabelled" "$pp_url" '{"app.kubernetes.io/name": "isolation-probe"}'
  start_probe "$INVOICES_NAMESPACE" "$caller" "$pp_url" "$invoice_labels"
  say "  probes started ($PROBE_IMAGE) against $pp_url"

  expect_probe blocked "pod in namespace $PROBE_NAMESPACE" "$PROBE_NAMESPACE" "$outsider"
  expect_probe blocked "unlabelled pod in $INVOICES_NAMESPACE" "$INVOICES_NAMESPACE" "$unlabelled"
  expect_probe reachable "pod labelled like invoice-app in $INVOICES_NAMESPACE" "$INVOICES_NAMESPACE" "$caller"
fi

# ---------------------------------------------------------------- verdict
echo
if ((${#problems[@]} > 0)); then
  printf '%s%s: FAILED with %d problem(s):%s\n' "$red" "$PROG" "${#problems[@]}" "$reset"
  printf '  - %s\n' "${problems[@]}"
  exit 1
fi
paid_count="$(jq -s 'map(select(.status == "paid")) | length' "$tmp/final.jsonl")"
failed_count="$(jq -s 'map(select(.status == "failed")) | length' "$tmp/final.jsonl")"
verdict="$settled invoice(s) settled ($paid_count paid, $failed_count failed)"
$isolation && verdict+="; payment-provider is isolated"
printf '%s%s: OK%s: %s\n' "$green" "$PROG" "$reset" "$verdict"
