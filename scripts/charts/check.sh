#!/usr/bin/env bash
# Offline checks of the Helm charts, for `make charts` and CI. No cluster needed.
#
#   scripts/charts/check.sh
#
# 1. helm lint --strict and helm template of every chart (team-namespace, both apps and
#    team-database, the PostgreSQL that deploy.sh installs per team) with every value set in
#    charts/<chart>/ci/*.yaml; value sets in scripts/charts/values/invalid/ must be refused.
# 1b. Monitoring: each rendered PrometheusRule equals the chart's rule files minus
#    excludeRules (check_monitoring.py) and passes promtool; the dashboard ConfigMaps hold
#    files/dashboards/ as is. The files themselves (generated, linted, runbooks) are
#    checked by `make monitoring` (scripts/monitoring/check.sh).
# 1c. Every value set of both apps starts the real binaries (check_start.py): the pods'
#    environment and mounted files as rendered, the binaries built from this tree
#    (cargo build --locked --bins), only the ports and the database made local (PostgreSQL
#    with TEST_DATABASE_URL); a set that renders but does not start fails with the binary's
#    last line on stderr.
# 2. Every rendered manifest validated strictly against the Kubernetes schema
#    (kubernetes-validate, K8S_VERSIONS); CRD kinds are skipped with a printed reason: the
#    Prometheus Operator's and cert-manager's are validated strictly against their CRD schemas
#    (check_crds.py), the others in the e2e workflow against the installed CRDs (no registry
#    carries them).
# 3. checkov over everything rendered: zero failures (skips live in the charts, with reasons).
# 4. Every pod template meets Pod Security "restricted" (check_pss.py); RBAC assertions
#    over the rendered team namespaces and apps, and the apps' instructions against the
#    team Role (check_rbac.py); what the charts expose (check_exposure.py); each of
#    invoice-app's runs scheduled once, by its CronJob or in process (check_schedules.py).
# 5. The team namespaces' admission policies evaluated with two CEL implementations against
#    fixture requests and the apps' own pods (check_admission.py).
# 6. NetworkPolicy reachability computed by network-config-analyzer over both team
#    namespaces, both apps (and a second invoice-app release), both team databases' policies
#    (charts/team-database) and a fixture world, for every value set in ci/ (check_netpol.py).
# 7. README values tables in step with values.yaml; yamllint over the values, value sets,
#    fixtures and deploy/ (the pinned one of scripts/lint/install-tools.sh: a missing linter
#    fails, it is never skipped). The scripts are shellchecked by `make lint-scripts`.
#
# Tools come from install-tools.sh (run first, idempotent) into $TOOLS_DIR.
# CHARTS_OUT=dir keeps the rendered manifests and tool reports there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/charts"
CHARTS="$ROOT/charts"
export TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
# The oldest Kubernetes the charts support (Chart.yaml kubeVersion) and the kubectl we ship.
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.34.0}"

if [[ -n "${CHARTS_OUT:-}" ]]; then
  OUT="$CHARTS_OUT"
  mkdir -p "$OUT"
  # Clear only what an earlier run left there.
  rm -rf "${OUT:?}"/{rendered,canary,validate,checkov,nca} "${OUT:?}"/*.log "${OUT:?}"/*.err
else
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi

"$HERE/install-tools.sh"
LINTERS="$("$ROOT/scripts/lint/install-tools.sh")"
export PATH="$TOOLS_DIR/bin:$LINTERS:$PATH"
# promtool (from install-tools.sh, or already on PATH) checks the rendered PrometheusRules.
if ! command -v promtool >/dev/null; then
  echo "promtool not found: install-tools.sh could not unpack Debian's prometheus package" >&2
  exit 2
fi
PY="$TOOLS_DIR/bin/python-k8s"
# checkov and nca stay offline: no policy download, no telemetry.
export BC_SKIP_MAPPING=TRUE CHECKOV_SKIP_DOWNLOAD=true PYTHONWARNINGS=ignore

# Where each chart is installed, and under which release name: the NetworkPolicy check
# relies on these names.
declare -A NAMESPACE=([team-namespace]=platform [payment-provider]=payments [invoice-app]=invoices
  [team-database]=invoices)
declare -A RELEASE=([team-namespace]=team [payment-provider]=payment-provider [invoice-app]=invoice-app
  [team-database]=invoices-db)
CHART_NAMES=(team-namespace payment-provider invoice-app team-database)

FAILED=()
START=$SECONDS
step_start=0
step() {
  step_start=$SECONDS
  printf '\n=== %s\n' "$*"
}
done_step() { printf '    (%ss)\n' "$((SECONDS - step_start))"; }
fail() {
  printf '  FAIL %s\n' "$*"
  FAILED+=("$*")
}

# render CHART VALUES OUTFILE: helm template with the chart's namespace and release name.
render() {
  local chart="$1" values="$2" out="$3" release="${RELEASE[$1]}" ns="${NAMESPACE[$1]}"
  local team
  team="$(basename "$values" -values.yaml)"
  # team-namespace: one release per team, named after it; team-database: one per team, in
  # the team's namespace, named like deploy.sh names it.
  [[ "$chart" == team-namespace ]] && release="team-$team"
  [[ "$chart" == team-database ]] && release="$team-db" ns="$team"
  helm template "$release" "$CHARTS/$chart" -n "$ns" -f "$values" >"$out"
}

step "helm lint --strict and helm template, every chart with every value set"
for chart in "${CHART_NAMES[@]}"; do
  mkdir -p "$OUT/rendered/$chart"
  for values in "$CHARTS/$chart"/ci/*.yaml; do
    set_name="$(basename "$values" .yaml)"
    set_name="${set_name%-values}"
    if ! log="$(helm lint --strict "$CHARTS/$chart" -n "${NAMESPACE[$chart]}" -f "$values" 2>&1)"; then
      printf '%s\n' "$log"
      fail "helm lint $chart ($set_name)"
      continue
    fi
    if ! render "$chart" "$values" "$OUT/rendered/$chart/$set_name.yaml" 2>"$OUT/render.err"; then
      cat "$OUT/render.err"
      fail "helm template $chart ($set_name)"
      continue
    fi
    printf '  ok   %-17s %-13s lint + template (%s objects)\n' "$chart" "$set_name" \
      "$(grep -c '^kind:' "$OUT/rendered/$chart/$set_name.yaml")"
  done
done
# A second invoice-app release in invoices, for the NetworkPolicy and admission checks.
mkdir -p "$OUT/canary"
for values in "$CHARTS"/invoice-app/ci/*.yaml; do
  set_name="$(basename "$values" -values.yaml)"
  if ! helm template canary "$CHARTS/invoice-app" -n invoices -f "$values" >"$OUT/canary/$set_name.yaml"; then
    fail "helm template invoice-app as release canary ($set_name)"
  fi
done
done_step

step "value sets that the schema or the templates must refuse"
# Each case is one mistake on top of the chart's ci/default-values.yaml (a set that renders),
# so it is refused for that mistake alone; `# base: none` starts from the bare defaults.
for values in "$HERE"/values/invalid/*/*.yaml; do
  chart="$(basename "$(dirname "$values")")"
  expect="$(sed -n 's/^# expect: //p' "$values")"
  case_name="$chart/$(basename "$values" .yaml)"
  base=()
  if [[ -f "$CHARTS/$chart/ci/default-values.yaml" ]] && ! grep -q '^# base: none$' "$values"; then
    base=(-f "$CHARTS/$chart/ci/default-values.yaml")
  fi
  if helm template x "$CHARTS/$chart" -n "${NAMESPACE[$chart]}" "${base[@]}" -f "$values" >/dev/null 2>"$OUT/refused.err"; then
    fail "$case_name: rendered, but must be refused ($expect)"
  elif ! grep -qF -- "$expect" "$OUT/refused.err"; then
    cat "$OUT/refused.err"
    fail "$case_name: refused for another reason than '$expect'"
  else
    printf '  ok   %-40s refused: %s\n' "$case_name" "$expect"
  fi
done
done_step

step "Every value set starts the real binaries (check_start.py)"
# A value set that renders and passes every other check may still crash-loop: a credential
# the binary refuses, a file it cannot read. Each pod template runs as the kubelet would run
# it (environment, mounted files, args), LISTEN_ADDR keeping its rendered host (0.0.0.0:
# the rules that hold only on loopback are tested as in a pod), until /readyz answers.
# CHARTS_BINARIES=dir starts the binaries there instead of building this tree's (cargo build
# --locked --bins into the target directory, debug).
if [[ -n "${CHARTS_BINARIES:-}" ]]; then
  BIN_DIR="$CHARTS_BINARIES"
  echo "  note the binaries in CHARTS_BINARIES=$BIN_DIR, not built from this tree"
else
  BIN_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug"
fi
if [[ -z "${CHARTS_BINARIES:-}" ]] && ! (cd "$ROOT" && cargo build --locked --bins --quiet); then
  fail "cargo build --locked --bins (check_start.py needs the binaries)"
elif ! "$PY" "$HERE/check_start.py" --bin-dir "$BIN_DIR" \
  "$CHARTS"/invoice-app/ci/*.yaml "$CHARTS"/payment-provider/ci/*.yaml; then
  fail "value sets that render but do not start (check_start.py)"
fi
done_step

step "Monitoring: PrometheusRule = the rule files minus excludeRules, dashboards as shipped (check_monitoring.py)"
# Every value set, plus the sets in values/monitoring/ (on top of ci/default-values.yaml)
# that turn the rules on with and without exclusions. Each rendered PrometheusRule's
# spec.groups is written out and checked by promtool as the rule file Prometheus will load.
mkdir -p "$OUT/monitoring"
for chart in invoice-app payment-provider; do
  for values in "$CHARTS/$chart"/ci/*.yaml; do
    set_name="$(basename "$values" -values.yaml)"
    "$PY" "$HERE/check_monitoring.py" "$CHARTS/$chart" "$OUT/rendered/$chart/$set_name.yaml" "$values" \
      --promtool-out "$OUT/monitoring/$chart-$set_name.rules.yaml" || fail "monitoring objects $chart ($set_name)"
  done
  for values in "$HERE/values/monitoring/$chart"/*.yaml; do
    set_name="$(basename "$values" .yaml)"
    rendered="$OUT/monitoring/$chart-$set_name.yaml"
    if ! helm lint --strict "$CHARTS/$chart" -n "${NAMESPACE[$chart]}" \
      -f "$CHARTS/$chart/ci/default-values.yaml" -f "$values" >"$OUT/lint.log" 2>&1; then
      cat "$OUT/lint.log"
      fail "helm lint $chart (monitoring/$set_name)"
    fi
    if ! helm template "${RELEASE[$chart]}" "$CHARTS/$chart" -n "${NAMESPACE[$chart]}" \
      -f "$CHARTS/$chart/ci/default-values.yaml" -f "$values" >"$rendered"; then
      fail "helm template $chart (monitoring/$set_name)"
      continue
    fi
    "$PY" "$HERE/check_monitoring.py" "$CHARTS/$chart" "$rendered" "$CHARTS/$chart/ci/default-values.yaml" "$values" \
      --promtool-out "$OUT/monitoring/$chart-$set_name.rules.yaml" || fail "monitoring objects $chart (monitoring/$set_name)"
  done
done
if compgen -G "$OUT/monitoring/*.rules.yaml" >/dev/null; then
  if promtool check rules "$OUT"/monitoring/*.rules.yaml >"$OUT/promtool.log" 2>&1; then
    printf '  ok   promtool check rules: %s rendered rule sets valid\n' "$(grep -c SUCCESS "$OUT/promtool.log")"
  else
    cat "$OUT/promtool.log"
    fail "promtool check rules (rendered PrometheusRules)"
  fi
else
  fail "no value set renders a PrometheusRule"
fi
done_step

step "strict Kubernetes schema validation (kubernetes-validate, Kubernetes ${K8S_VERSIONS// /, })"
# Custom resources have no schema in kubernetes-validate: take them out, and say so.
mkdir -p "$OUT/validate"
"$PY" - "$OUT/rendered" "$OUT/validate" <<'EOF'
import pathlib, sys, yaml
src, dst = map(pathlib.Path, sys.argv[1:])
CRDS = {"monitoring.coreos.com": "Prometheus Operator CRD", "gateway.networking.k8s.io": "Gateway API CRD",
        "postgresql.cnpg.io": "CloudNativePG CRD", "cert-manager.io": "cert-manager CRD"}
skipped = {}
for f in sorted(src.glob("*/*.yaml")):
    docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
    keep = []
    for d in docs:
        group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
        if group in CRDS:
            skipped.setdefault(f"{d['kind']} ({d['apiVersion']})", CRDS[group])
        else:
            keep.append(d)
    (dst / f"{f.parent.name}--{f.name}").write_text(yaml.safe_dump_all(keep, sort_keys=False))
for kind, why in sorted(skipped.items()):
    if "monitoring.coreos.com" in kind or "cert-manager.io" in kind:
        also = "; validated against its CRD schema by check_crds.py"
    else:
        also = "; the e2e workflow validates it strictly against the installed CRDs"
    print(f"  skip {kind}: {why}, not in the Kubernetes schema; checked by checkov{also}")
EOF
# The Prometheus Operator's and cert-manager's kinds get their own strict validation, against
# their CRD schemas.
if ! "$TOOLS_DIR/bin/python-models" "$HERE/check_crds.py" "$OUT"/rendered/*/*.yaml "$OUT"/monitoring/*.yaml; then
  fail "Prometheus Operator and cert-manager objects against the CRD schemas"
fi
for version in $K8S_VERSIONS; do
  if kubernetes-validate --strict --quiet -k "$version" "$OUT"/validate/*.yaml >"$OUT/validate-$version.log" 2>&1 &&
    ! grep -q . "$OUT/validate-$version.log"; then
    printf '  ok   %s manifests valid against Kubernetes %s (strict)\n' \
      "$(cat "$OUT"/validate/*.yaml | grep -c '^kind:')" "$version"
  else
    cat "$OUT/validate-$version.log"
    fail "kubernetes-validate $version"
  fi
done
done_step

step "checkov over every rendered manifest"
mkdir -p "$OUT/checkov"
for f in "$OUT"/rendered/*/*.yaml; do
  cp "$f" "$OUT/checkov/$(basename "$(dirname "$f")")--$(basename "$f")"
done
if checkov -d "$OUT/checkov" --framework kubernetes --skip-download --compact --quiet \
  >"$OUT/checkov.log" 2>&1; then
  sed -n 's/^\(Passed checks.*\)/  ok   \1/p' "$OUT/checkov.log"
else
  cat "$OUT/checkov.log"
  fail "checkov"
fi
# Every skip sits in a chart as an annotation `checkov.io/skipN: CKV_ID=reason`.
while IFS= read -r skip; do
  if [[ "$skip" =~ ^CKV2?_[A-Z0-9_]+=.{10,}$ ]]; then
    printf '  skip %s\n' "$skip"
  else
    fail "checkov skip without a reason: $skip"
  fi
done < <(grep -ho 'checkov.io/skip[0-9]*: .*' "$OUT"/rendered/*/*.yaml | sed 's/^[^:]*: //' | sort -u)
done_step

step "Pod Security \"restricted\", which the team namespaces enforce (check_pss.py)"
if ! "$PY" "$HERE/check_pss.py" "$OUT"/rendered/payment-provider/*.yaml "$OUT"/rendered/invoice-app/*.yaml; then
  fail "Pod Security restricted"
fi
done_step

step "RBAC (check_rbac.py)"
team_args=()
for team in invoices payments; do
  app=invoice-app
  [[ "$team" == payments ]] && app=payment-provider
  apps="$(printf '%s,' "$OUT/rendered/$app"/*.yaml)"
  team_args+=(--team "$team=$OUT/rendered/team-namespace/$team.yaml,${apps%,}")
done
# The commands the apps' NOTES and READMEs give the team must be within the team Role.
instructions=()
for app in invoice-app payment-provider; do
  instructions+=(--instructions "$CHARTS/$app/templates/NOTES.txt" --instructions "$CHARTS/$app/README.md")
done
# ... and the commands of the runbooks, which the team runs when an alert fires.
for runbook in "$ROOT"/docs/runbooks/*.md; do instructions+=(--instructions "$runbook"); done
if ! "$PY" "$HERE/check_rbac.py" "${team_args[@]}" "${instructions[@]}"; then
  fail "RBAC assertions"
fi
done_step

step "What the charts expose (check_exposure.py)"
if ! "$PY" "$HERE/check_exposure.py" "$CHARTS" "$OUT/rendered/payment-provider" "$OUT/rendered/invoice-app"; then
  fail "exposure assertions"
fi
done_step

step "Each run scheduled once: its CronJob or the in-process schedule (check_schedules.py)"
if ! "$PY" "$HERE/check_schedules.py" "$OUT"/rendered/invoice-app/*.yaml; then
  fail "schedules of the runs"
fi
done_step

step "Admission policies, evaluated with real CEL (check_admission.py)"
admission_args=()
for f in "$OUT"/rendered/invoice-app/*.yaml; do admission_args+=(--app "invoices=$f"); done
for f in "$OUT"/rendered/payment-provider/*.yaml; do admission_args+=(--app "payments=$f"); done
# The second release's ServiceAccount is not allowed to wear invoice-app's label.
admission_args+=(--refused-app "invoices=$OUT/canary/production.yaml")
if ! "$PY" "$HERE/check_admission.py" \
  --policies "$OUT/rendered/team-namespace/invoices.yaml" "$OUT/rendered/team-namespace/payments.yaml" \
  --cases "$HERE/fixtures/admission-cases.yaml" "${admission_args[@]}"; then
  fail "admission policies"
fi
done_step

step "NetworkPolicy reachability (network-config-analyzer)"
# without_monitoring IN OUT: the manifests minus PrometheusRules and dashboard ConfigMaps.
# nca skips a whole file containing "{{" as an unrendered template, and the alert
# annotations and dashboard legends hold Prometheus/Grafana templates; neither bears on
# reachability.
without_monitoring() {
  "$PY" - "$1" >"$2" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = [d for d in docs if d["kind"] != "PrometheusRule"
        and not (d["kind"] == "ConfigMap" and (d["metadata"].get("labels") or {}).get("grafana_dashboard"))]
print(yaml.safe_dump_all(keep, sort_keys=False), end="")
EOF
  if grep -q '{{' "$2"; then fail "$2: still holds '{{', which nca would skip"; fi
}
# scenario VALUE_SET CHECK_NETPOL_ARGS...: both apps rendered with ci/VALUE_SET-values.yaml,
# and invoice-app once more as release canary. Each scenario is computed three times: as
# rendered, and with only the ingress or only the egress side of every policy, so that each
# side must hold on its own.
scenario() {
  local name="$1" mode dir
  shift
  printf -- '--- value set %s (both apps, and invoice-app again as release canary)\n' "$name"
  for mode in full ingress egress; do
    dir="$OUT/nca/$name-$mode"
    mkdir -p "$dir"
    cp "$OUT/rendered/team-namespace/invoices.yaml" "$OUT/rendered/team-namespace/payments.yaml" \
      "$HERE/fixtures/netpol-world.yaml" "$dir/"
    # The databases' policies as deploy.sh installs them (charts/team-database, ci values).
    cp "$OUT/rendered/team-database/invoices.yaml" "$dir/invoices-db.yaml"
    cp "$OUT/rendered/team-database/payments.yaml" "$dir/payments-db.yaml"
    without_monitoring "$OUT/rendered/payment-provider/$name.yaml" "$dir/payment-provider.yaml"
    without_monitoring "$OUT/rendered/invoice-app/$name.yaml" "$dir/invoice-app.yaml"
    without_monitoring "$OUT/canary/$name.yaml" "$dir/invoice-app-canary.yaml"
    if [[ "$mode" != full ]] && ! "$PY" "$HERE/check_netpol.py" isolate "$dir" "$mode"; then
      fail "isolating the $mode side ($name)"
      continue
    fi
    if ! nca --connectivity -r "$dir" -o txt_no_fw_rules -f "$dir.txt" >"$dir.log" 2>&1; then
      cat "$dir.log"
      fail "nca ($name, $mode)"
    elif ! "$PY" "$HERE/check_netpol.py" assert "$dir.txt" --mode "$mode" "$@"; then
      fail "NetworkPolicy assertions ($name, $mode)"
    fi
  done
}
# What each value set asks for (see charts/*/ci/): the databases, Prometheus, the
# CronJobs (pay-run, daily-run), the ways in, the API server payment-provider reads the JWKS
# from, and the identity provider invoice-app reads it from.
scenario production --invoices-db --payments-db --monitoring --cronjob pay-run --cronjob daily-run \
  --way-in gateway --way-in ingress --api-server 10.96.0.1 --api-server 172.18.0.2-172.18.0.4 \
  --idp 'identity/keycloak[Pod]={protocols:TCP,dst_ports:8443}'
scenario default --cronjob pay-run --cronjob daily-run --way-in gateway --api-server 10.96.0.1 --api-server 172.18.0.2
scenario postgres-url --payments-db --cronjob pay-run --way-in ingress --api-server 10.96.0.1 --api-server-ports 443 \
  --idp '203.0.113.10={protocols:TCP,dst_ports:443}'
scenario minimal
scenario demo --cronjob pay-run --cronjob daily-run --way-in gateway
# Every value set has its scenario.
for values in "$CHARTS"/invoice-app/ci/*.yaml "$CHARTS"/payment-provider/ci/*.yaml; do
  set_name="$(basename "$values" -values.yaml)"
  [[ -d "$OUT/nca/$set_name-full" ]] || fail "value set $set_name has no NetworkPolicy scenario"
done
done_step

step "README values tables, YAML style"
if "$PY" "$HERE/values-table.py" --check "$CHARTS"/*/; then
  echo "  ok   README values tables match values.yaml"
else
  fail "README values tables (run scripts/charts/values-table.py charts/*/)"
fi
if yamllint -s -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' \
  "$CHARTS"/*/values.yaml "$CHARTS"/*/ci "$CHARTS"/*/Chart.yaml "$HERE/values" "$HERE/fixtures" \
  "$ROOT/deploy"; then
  echo "  ok   yamllint values, value sets, fixtures and deploy/"
else
  fail "yamllint"
fi
done_step

printf '\n=== charts: %ss in all\n' "$((SECONDS - START))"
if ((${#FAILED[@]})); then
  printf 'FAILED:\n'
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
echo "all chart checks passed"
