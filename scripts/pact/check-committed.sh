#!/usr/bin/env bash
# Fails when pacts/ differs from what git has committed. Run it after invoice-app's consumer
# pact tests, which rewrite pacts/ from scratch:
#   cargo nextest run -p invoice-app --test pact_consumer && scripts/pact/check-committed.sh
# A difference means the consumer's expectations changed without the pact being committed
# (or the committed pact was edited by hand): the provider would verify a stale contract.
set -euo pipefail

cd "$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"

shopt -s nullglob
pacts=(pacts/*.json)
if ((${#pacts[@]} == 0)); then
  echo "check-committed: no pact in pacts/; run the consumer tests first:" >&2
  echo "  cargo nextest run -p invoice-app --test pact_consumer" >&2
  exit 1
fi

stale=0
# Against HEAD, so that staged but uncommitted changes count too.
if ! git diff --quiet HEAD -- pacts/ 2>/dev/null; then
  stale=1
fi
# New pact files (ignored ones too: a pact that .gitignore hides is not committed either).
untracked="$(git ls-files --others -- 'pacts/*.json')"
if [[ -n "$untracked" ]]; then
  stale=1
fi

if ((stale)); then
  echo "check-committed: pacts/ differs from the committed pacts:" >&2
  git status --short --untracked-files=all --ignored -- pacts/ >&2
  git --no-pager diff --stat HEAD -- pacts/ >&2 2>/dev/null || true
  echo >&2
  echo "The consumer tests regenerated the pact. Review it (git diff HEAD -- pacts/) and" >&2
  echo "commit the regenerated pacts/ together with the change that caused it." >&2
  exit 1
fi

echo "check-committed: pacts/ matches the committed pacts (${#pacts[@]} file(s))."
