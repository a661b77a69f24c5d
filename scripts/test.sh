#!/usr/bin/env bash
# Installs missing prerequisites, then runs every test in the workspace: unit and integration
# tests (which start throwaway mariadbd servers through the test kit) and doc tests. Benches
# are compiled by clippy in CI but not run here.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ -d "$HOME/.cargo/bin" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# --no-fail-fast: one failing test binary should not hide the results of the others; cargo
# still exits non-zero at the end.
status=0
cargo test --workspace --no-fail-fast --lib --bins --tests || status=$?
cargo test --workspace --no-fail-fast --doc || status=$?
exit "$status"
