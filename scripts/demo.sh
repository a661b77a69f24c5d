#!/usr/bin/env bash
# The README's demo: installs what is missing, then runs outflow end to end on throwaway
# local MariaDB servers (see examples/demo.rs for what it does today).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -d "$HOME/.cargo/bin" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build --release -p outflow
OUTFLOW_BIN="$(pwd)/target/release/outflow" exec cargo run --release --example demo
