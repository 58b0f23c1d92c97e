# shellcheck shell=bash
# Sourced by deploy.sh and test.sh before anything else runs: refuses a bash that is too
# old and lists every missing tool at once, with install hints for Linux and macOS.
# Written in bash 3.2 syntax on purpose: it has to run on macOS's /bin/bash to say so.

# require_bash: bash >= 4.4 (mapfile, associative arrays, empty arrays under set -u).
# PREFLIGHT_BASH_VERSION (MAJOR.MINOR) stands in for the running bash in the dry-run test.
require_bash() {
  local version="${PREFLIGHT_BASH_VERSION:-${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}}"
  local major="${version%%.*}" minor="${version#*.}"
  minor="${minor%%.*}"
  if ((major > 4 || (major == 4 && minor >= 4))); then
    return 0
  fi
  {
    echo "${0##*/}: needs bash >= 4.4; this is bash $version."
    echo "  macOS ships bash 3.2: brew install bash, then run: \"\$(brew --prefix)/bin/bash\" ${0##*/} ..."
    echo "  Linux: sudo apt-get install -y bash (or your distribution's bash package)"
  } >&2
  exit 2
}

# install_hint TOOL: how to install TOOL on Linux and on macOS.
install_hint() {
  case "$1" in
    docker) echo "Linux: Docker Engine (sudo apt-get install -y docker.io); macOS: Docker Desktop (brew install --cask docker)" ;;
    kind) echo "Linux: go install sigs.k8s.io/kind@latest, or kind's release binary; macOS: brew install kind" ;;
    kubectl) echo "scripts/charts/install-tools.sh (linux/amd64); Linux: your distribution's kubectl; macOS: brew install kubectl" ;;
    helm) echo "scripts/charts/install-tools.sh (linux/amd64); Linux: your distribution's helm; macOS: brew install helm" ;;
    sha256sum) echo "Linux: sudo apt-get install -y coreutils; macOS: built in as shasum" ;;
    base64 | od | awk | mktemp) echo "Linux: sudo apt-get install -y coreutils gawk; macOS: built in" ;;
    *) echo "Linux: sudo apt-get install -y $1; macOS: brew install $1" ;;
  esac
}

# require_tools TOOL...: every missing tool in one message, then exit 2.
require_tools() {
  local tool missing=""
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
  done
  [[ -z "$missing" ]] && return 0
  {
    echo "${0##*/}: missing tools:$missing"
    for tool in $missing; do
      printf '  %-10s %s\n' "$tool" "$(install_hint "$tool")"
    done
  } >&2
  exit 2
}
