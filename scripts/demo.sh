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
if [[ "$mode" == demo ]]; then
  INVOICE_API_TOKEN="$dev_key" "$root/test.sh" "http://127.0.0.1:$app_port"
else
  echo "logs in $data; try: curl -X POST -H 'Authorization: Bearer $dev_key' http://127.0.0.1:$app_port/invoices/pay"
  echo "Ctrl-C stops both services."
  wait
fi
