#!/usr/bin/env bash
# Lints the repository's shell scripts, GitHub workflows and Dockerfile:
#   - ShellCheck on every *.sh (and extension-less script with a sh/bash shebang)
#   - actionlint on .github/workflows/*.yml (it runs ShellCheck on `run:` blocks)
#   - yamllint on .github/, with scripts/lint/yamllint.yml
#   - hadolint on the Dockerfile(s)
# Files are those git knows: tracked plus untracked-but-not-ignored, so a new
# script is linted before its first commit. The tools are the pinned ones that
# scripts/lint/install-tools.sh installs (run first; a no-op when they are there), ahead
# of any other copy on PATH. Exit status: 0 when all pass; 2 when a tool is missing.
set -euo pipefail

cd "$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"

PATH="$(scripts/lint/install-tools.sh):$PATH"

failed=()

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "lint: $1 not found after scripts/lint/install-tools.sh" >&2
    exit 2
  fi
}

# run NAME CMD...: runs one linter, remembers a failure and goes on.
run() {
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    echo "   ok"
  else
    failed+=("$name")
  fi
}

# Build output is skipped even where no .gitignore lists it yet.
repo_files() {
  git ls-files --cached --others --exclude-standard -- "$@" | grep -Ev '(^|/)target/' || true
}

shell_scripts=()
while IFS= read -r f; do
  [[ -f "$f" ]] || continue
  case "$f" in
    *.sh) shell_scripts+=("$f") ;;
    */*.* | *.*) ;;
    *) if head -n1 "$f" 2>/dev/null | grep -Eq '^#!.*[/ ](ba)?sh( |$)'; then shell_scripts+=("$f"); fi ;;
  esac
done < <(repo_files | sort -u)

need shellcheck
need actionlint
need yamllint
need hadolint

if ((${#shell_scripts[@]} > 0)); then
  run "shellcheck (${#shell_scripts[@]} scripts)" shellcheck --external-sources "${shell_scripts[@]}"
fi

mapfile -t workflows < <(repo_files '.github/workflows/*.yml' '.github/workflows/*.yaml' | sort -u)
if ((${#workflows[@]} > 0)); then
  run "actionlint (${#workflows[@]} workflows)" actionlint "${workflows[@]}"
fi

mapfile -t github_yaml < <(repo_files '.github/*.yml' '.github/*.yaml' '.github/**/*.yml' '.github/**/*.yaml' | sort -u)
if ((${#github_yaml[@]} > 0)); then
  run "yamllint (${#github_yaml[@]} files)" yamllint --strict -c scripts/lint/yamllint.yml "${github_yaml[@]}"
fi

mapfile -t dockerfiles < <(repo_files 'Dockerfile' '*/Dockerfile' '*.Dockerfile' 'docker/*' | sort -u)
if ((${#dockerfiles[@]} > 0)); then
  run "hadolint (${#dockerfiles[@]} files)" hadolint "${dockerfiles[@]}"
fi

if ((${#failed[@]} > 0)); then
  echo "lint: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all checks passed"
