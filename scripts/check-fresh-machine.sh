#!/usr/bin/env bash
# What a new user sees when the README's two commands meet a machine that lacks tools:
# `make test` and `make demo` must stop within seconds, before building or installing
# anything, with one list naming each missing prerequisite and its install command.
# Run by .ci/run (seconds); the full runs of both commands later in CI show that they pass
# once the tools are there.
#
#   1. bare machine: an empty HOME and a PATH holding only bash, make and a few coreutils.
#   2. a machine short of a few tools: the real PATH less jq, cargo-nextest, shellcheck and
#      yamllint; only jq and cargo-nextest may be reported (the project installs the linters).
#   3. bash too old: the version check refuses 3.2 (macOS's /bin/bash) and 4.3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each case may take this long at most: a check that starts building takes minutes.
LIMIT_SECS=20
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run_case NAME EXPECTED_STATUS HOME PATH CMD...: runs CMD in a clean environment, output in
# $work/NAME.out, and checks its exit status and its time.
run_case() {
  local name="$1" want="$2" home="$3" path="$4" status=0 start=$SECONDS
  shift 4
  # A build started by mistake would land in $work/target, counted as a failure below.
  env -i HOME="$home" PATH="$path" TERM=dumb CARGO_TARGET_DIR="$work/target" \
    TEST_DATABASE_URL="${TEST_DATABASE_URL:-}" timeout "$LIMIT_SECS" "$@" >"$work/$name.out" 2>&1 || status=$?
  echo "--- $name: exit $status after $((SECONDS - start))s"
  sed 's/^/    /' "$work/$name.out"
  [[ "$status" == "$want" ]] || fail "$name: exit status $status, expected $want"
}

# expect NAME TEXT...: each TEXT appears in the output of case NAME.
expect() {
  local name="$1" text
  shift
  for text in "$@"; do
    grep -qF -- "$text" "$work/$name.out" || fail "$name: output does not mention '$text'"
  done
}
# refuse NAME TEXT...: no TEXT appears in the output of case NAME.
refuse() {
  local name="$1" text
  shift
  for text in "$@"; do
    ! grep -qF -- "$text" "$work/$name.out" || fail "$name: output mentions '$text'"
  done
}

# 1. The bare machine.
bare="$work/bare-bin"
home="$work/home"
mkdir -p "$bare" "$home"
for tool in bash env make dirname cat sed uname id grep head tr timeout; do
  ln -s "$(command -v "$tool")" "$bare/$tool"
done
run_case bare-test 2 "$home" "$bare" make --no-print-directory test
expect bare-test "nothing was built" cargo cargo-nextest "C compiler" libpq python3 npm git \
  "sudo apt-get install" "brew install"
refuse bare-test Compiling "lint-tools:" "install-tools"
run_case bare-demo 2 "$home" "$bare" make --no-print-directory demo
expect bare-demo "nothing was built" cargo "C compiler" libpq curl jq
[[ -z "$(ls -A "$home")" ]] || fail "the bare runs wrote to HOME: $(ls -A "$home")"

# 2. The real machine less a few tools: only what the system must provide is reported.
short="$work/short-bin"
mkdir -p "$short"
IFS=: read -r -a path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  [[ -d "$dir" ]] || continue
  for exe in "$dir"/*; do
    tool="${exe##*/}"
    case "$tool" in jq | cargo-nextest | shellcheck | yamllint) continue ;; esac
    [[ -x "$exe" && ! -e "$short/$tool" ]] && ln -s "$exe" "$short/$tool"
  done
done
run_case short-test 2 "$HOME" "$short" make --no-print-directory test
expect short-test cargo-nextest
refuse short-test "  - jq" "  - shellcheck" "  - yamllint" Compiling
run_case short-demo 2 "$HOME" "$short" make --no-print-directory demo
expect short-demo "  - jq"
refuse short-demo cargo-nextest shellcheck yamllint Compiling

[[ ! -e "$work/target" ]] || fail "a build started: $work/target exists"

# 3. bash too old for the project's scripts.
for version in 3.2 4.3; do
  run_case "bash-$version" 2 "$HOME" "$PATH" env PREREQS_BASH_VERSION="$version" \
    scripts/prereqs.sh --no-install test
  expect "bash-$version" "bash >= 4.4 (this is $version)" "brew install bash"
done

if ((failures > 0)); then
  echo "fresh machine: $failures check(s) failed" >&2
  exit 1
fi
echo "fresh machine: both README commands stop at once with the full list of what is missing"
