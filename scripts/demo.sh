#!/usr/bin/env bash
# The local demo: builds both services, starts them on SQLite with demo data, and either
# pays every demo invoice end to end with test.sh (`demo`, the default) or leaves them
# running until Ctrl-C (`run`). invoice-app runs without configured credentials, on
# loopback, so its API takes the public development key, printed below.
set -euo pipefail

mode="${1:-demo}"
case "$mode" in
  demo | run) ;;
  *)
    echo "usage: $0 [demo|run]" >&2
    exit 2
    ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
provider_port="${PROVIDER_PORT:-8080}"
app_port="${APP_PORT:-8081}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
# What invoice-app accepts on loopback when no issuer and no API keys are configured.
dev_key="dev-only-insecure-api-key"

cargo build --locked --bins
for port in "$provider_port" "$app_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is in use; stop what listens there or set PROVIDER_PORT / APP_PORT" >&2
    exit 1
  fi
done

# The demo starts from empty databases each time; `run` keeps them under .demo/.
if [[ "$mode" == demo ]]; then
  data="$(mktemp -d)"
else
  data="$root/.demo"
  mkdir -p "$data"
fi
pids=()
stop() {
  ((${#pids[@]} == 0)) || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [[ "$mode" == run ]] || rm -rf "$data"
}
trap stop EXIT

LISTEN_ADDR="127.0.0.1:$provider_port" DATABASE_URL="sqlite://$data/payment-provider.db" SEED=demo \
  LOG_FORMAT=json "$target_dir/debug/payment-provider" >"$data/payment-provider.log" 2>&1 &
pids+=("$!")
LISTEN_ADDR="127.0.0.1:$app_port" DATABASE_URL="sqlite://$data/invoice-app.db" SEED=demo PAY_SCHEDULE=off DAILY_SCHEDULE=off \
  PAYMENT_PROVIDER_URL="http://127.0.0.1:$provider_port" LOG_FORMAT=json \
  "$target_dir/debug/invoice-app" >"$data/invoice-app.log" 2>&1 &
pids+=("$!")

for url in "http://127.0.0.1:$provider_port/readyz" "http://127.0.0.1:$app_port/readyz"; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && continue 2
    sleep 0.1
  done
  echo "demo: $url did not become ready; logs follow" >&2
  tail -n 20 "$data"/*.log >&2
  exit 1
done

echo "payment-provider: http://127.0.0.1:$provider_port   invoice-app: http://127.0.0.1:$app_port"
echo "invoice-app's API key (development only, loopback only): $dev_key"
# Dunning, with the clock moved on: a customer short of funds is declined softly, the
# invoice goes past due, funds arrive, and the daily run "four days later" pays it with one
# charge. The days pass through DEV_CLOCK_SHIFT, which only a SQLite database with the API on
# loopback accepts (production's clock is PostgreSQL's; invoice-app refuses it there).
dunning_scene() {
  local api="http://127.0.0.1:$app_port" customer=C002 account balance amount id invoice
  api_call() { curl -fsS -H "Authorization: Bearer $dev_key" "$@"; }
  provider_cli() {
    DATABASE_URL="sqlite://$data/payment-provider.db" LOG_FORMAT=json \
      "$target_dir/debug/payment-provider" accounts "$@" 2>>"$data/payment-provider.log"
  }
  account="$(provider_cli show "$customer")"
  # "customer C002: 99999990.00 EUR, active": the balance in cents, plus 25.00 it lacks.
  balance="$(sed -E 's/^customer [^:]+: ([0-9]+)\.([0-9]{2}) EUR.*/\1\2/' <<<"$account")"
  amount=$((10#$balance + 2500))
  echo
  echo "== Dunning: $account; an invoice of 25.00 EUR more than that"
  id="$(api_call -X POST -H 'Content-Type: application/json' "$api/invoices" \
    -d "{\"customer_id\":\"$customer\",\"amount\":{\"minor_units\":$amount,\"currency\":\"EUR\"},\"description\":\"dunning demo\"}" |
    jq -r .id)"
  api_call -X POST "$api/invoices/pay" | jq -c '{run: "monthly", summary}'
  invoice="$(api_call "$api/invoices/$id")"
  jq -c '{status, attempt_count, failure_reason, next_attempt_at}' <<<"$invoice"
  [[ "$(jq -r .status <<<"$invoice")" == past_due ]] || { echo "demo: expected past_due" >&2; exit 1; }
  echo "== Funds arrive: $(provider_cli fund "$customer" 25.00 EUR | tail -n 1)"
  echo "== Four days later (DEV_CLOCK_SHIFT=4d), the daily run retries it:"
  LISTEN_ADDR="127.0.0.1:$app_port" DATABASE_URL="sqlite://$data/invoice-app.db" SEED=none \
    PAYMENT_PROVIDER_URL="http://127.0.0.1:$provider_port" LOG_FORMAT=json DEV_CLOCK_SHIFT=4d \
    "$target_dir/debug/invoice-app" daily 2>>"$data/invoice-app.log"
  invoice="$(api_call "$api/invoices/$id")"
  jq -c '{status, attempt_count, charge_id}' <<<"$invoice"
  api_call "$api/invoices/$id/attempts" | jq -c '.items[] | {outcome, provider_code, idempotency_key, charge_id}'
  echo "== $(provider_cli show "$customer")"
  [[ "$(jq -r .status <<<"$invoice")" == paid ]] || { echo "demo: expected paid" >&2; exit 1; }
  # One charge: the balance is what it was, less nothing (25.00 arrived, all of it taken).
  [[ "$(provider_cli show "$customer")" == "customer $customer: 0.00 EUR, active" ]] ||
    { echo "demo: the account should be empty after one charge" >&2; exit 1; }
}

if [[ "$mode" == demo ]]; then
  INVOICE_API_TOKEN="$dev_key" "$root/test.sh" "http://127.0.0.1:$app_port"
  dunning_scene
else
  echo "logs in $data; try: curl -X POST -H 'Authorization: Bearer $dev_key' http://127.0.0.1:$app_port/invoices/pay"
  echo "Ctrl-C stops both services."
  wait
fi
