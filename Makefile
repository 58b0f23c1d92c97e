# Developer entry points. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help
export PACT_DO_NOT_TRACK := true

NEXTEST := cargo nextest run --locked
# Each entry point first checks the machine (scripts/prereqs.sh): it stops at once with one
# list of what is missing, before building anything. `make test` checks for all its parts
# at once; the parts it calls skip their own check.
PREREQS = @if [ -z "$$PREREQS_CHECKED" ]; then scripts/prereqs.sh $(1); fi

.PHONY: help build test test-rust monitoring test-chaos pact pact-consumer pact-verify pact-standalone fuzz-api openapi charts lint lint-scripts fmt run run-provider run-app demo bench ci

help: ## List the targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## Build both services
	cargo build --locked --bins

test: ## Run every test: Rust (SQLite + PostgreSQL), Pact, API fuzzing, charts, monitoring, scripts
	scripts/prereqs.sh test
	@PREREQS_CHECKED=1 $(MAKE) --no-print-directory test-rust pact fuzz-api charts monitoring lint-scripts

test-rust: ## Unit and integration tests on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set
	$(call PREREQS,rust)
	@if [ -z "$$TEST_DATABASE_URL" ]; then echo "PostgreSQL tests SKIPPED: set TEST_DATABASE_URL=postgres://user@host:5432 to run them"; fi
	$(NEXTEST) --workspace -E 'not binary(/pact/)'

monitoring: ## Generated SLO rules and dashboards in step, dashboards linted, runbooks; promtool check + unit tests; then every rule and dashboard query against a real Prometheus scraping the services
	$(call PREREQS,monitoring)
	scripts/monitoring/check.sh

test-chaos: ## Three replicas and the provider SIGKILLed, a replica frozen, connections cut, under injected faults on PostgreSQL, with past-due retries while the operator funds, releases and closes accounts; then invariants read from both databases (CHAOS_SEED=<n> replays a run)
	$(call PREREQS,rust)
	scripts/chaos/chaos.py --freeze --cut-db $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

pact: ## Consumer tests (writes pacts/), then provider verification, in-repo and standalone
	$(call PREREQS,pact)
	@PREREQS_CHECKED=1 $(MAKE) --no-print-directory pact-consumer pact-verify pact-standalone

pact-consumer: ## invoice-app's consumer tests; fails if the committed pact is stale
	$(call PREREQS,pact)
	$(NEXTEST) -p invoice-app --test pact_consumer
	scripts/pact/check-committed.sh

pact-verify: ## payment-provider verifies every pact in pacts/
	$(call PREREQS,pact)
	$(NEXTEST) -p payment-provider --test pact_provider

pact-standalone: ## The committed pacts verified against the running binary by pact-python's verifier
	$(call PREREQS,pact)
	scripts/pact/verify-standalone.py

fuzz-api: ## OpenAPI document validated, then schemathesis against invoice-app from it (SQLite, and PostgreSQL with TEST_DATABASE_URL)
	$(call PREREQS,fuzz)
	scripts/api/fuzz-openapi.py

openapi: ## Write invoice-app's generated OpenAPI document over the committed crates/invoice-app/openapi.json (review the diff, then commit it)
	$(call PREREQS,rust)
	UPDATE_OPENAPI=1 $(NEXTEST) -p invoice-app -E 'test(the_committed_openapi_document_is_the_generated_one)'
	@git --no-pager diff --stat -- crates/invoice-app/openapi.json

charts: ## Offline chart checks: lint, schema, every value set started with the real binaries, checkov, NetworkPolicy reachability, RBAC, admission; deploy.sh/test.sh dry runs
	$(call PREREQS,charts)
	scripts/charts/check.sh
	scripts/deploy/dry-run.sh

lint: ## rustfmt, clippy, shellcheck, actionlint, yamllint
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	$(MAKE) lint-scripts

lint-scripts: ## shellcheck, actionlint, yamllint
	$(call PREREQS,lint)
	scripts/lint/check.sh

fmt: ## Format the Rust code
	cargo fmt --all

demo: ## Both services on SQLite with demo data; pay every invoice end to end, then stop
	scripts/prereqs.sh demo
	scripts/demo.sh demo

run: ## Both services on SQLite with demo data, left running (Ctrl-C stops them)
	scripts/prereqs.sh demo
	scripts/demo.sh run

run-provider: ## payment-provider alone, no configuration (SQLite, demo accounts, dev token)
	cargo run -p payment-provider

run-app: ## invoice-app alone, against payment-provider on 127.0.0.1:8080
	cargo run -p invoice-app

bench: ## Release build; pay-run throughput, API latency, memory, start-up (prints a table and JSON)
	$(call PREREQS,bench)
	@scripts/bench/bench.py

ci: ## What .ci/run does
	bash .ci/run
