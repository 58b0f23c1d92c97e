# shellcheck shell=bash
# What the install-tools.sh scripts share. Source it after setting TOOLS_DIR, BIN and
# PYTHON: every tool goes into a cache outside the repo, without root, once per version.

log() { printf '[install-tools] %s\n' "$*" >&2; }

# A stamp file per tool records the version installed, so a second run is a no-op.
installed() { [[ -f "$TOOLS_DIR/.stamp-$1" && "$(cat "$TOOLS_DIR/.stamp-$1")" == "$2" ]]; }
stamp() { printf '%s' "$2" >"$TOOLS_DIR/.stamp-$1"; }

# make_venv NAME STAMP PACKAGE... : a fresh venv under $TOOLS_DIR/NAME with pinned packages.
make_venv() {
  local name="$1" want="$2"
  shift 2
  if installed "$name" "$want" && [[ -x "$TOOLS_DIR/$name/bin/python" ]]; then
    return
  fi
  log "installing $* into $TOOLS_DIR/$name"
  rm -rf "${TOOLS_DIR:?}/$name"
  "$PYTHON" -m venv "$TOOLS_DIR/$name"
  "$TOOLS_DIR/$name/bin/pip" install --quiet --disable-pip-version-check "$@"
  stamp "$name" "$want"
}

# python_wrapper NAME VENV : $BIN/NAME runs the venv's Python. A wrapper, not a symlink:
# Python finds its venv from the path it was started by.
python_wrapper() {
  rm -f "$BIN/$1"
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$TOOLS_DIR/$2/bin/python" >"$BIN/$1"
  chmod 0755 "$BIN/$1"
}
