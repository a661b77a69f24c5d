#!/usr/bin/env bash
# Installs what outflow's build and tests need on Debian or Ubuntu, and only what is missing:
# the MariaDB server and client (the test kit starts its own throwaway mariadbd processes and
# never uses the system service), sysbench, and the C toolchain that some crates build with
# (libssl-dev for openssl-sys, which the mysql_cdc test oracle and bench baseline pull in).
# Safe to run again and again: with everything present it changes nothing.
set -euo pipefail

say() { echo "setup: $*"; }

packages=(mariadb-server mariadb-client sysbench build-essential pkg-config libssl-dev zstd gzip ca-certificates)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    as_root=(false)
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "no dpkg/apt-get here: install by hand: ${packages[*]}"
    missing_programs=()
    for program in mariadbd mariadb mariadb-install-db sysbench cc; do
        command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || missing_programs+=("$program")
    done
    if [ "${#missing_programs[@]}" -gt 0 ]; then
        say "missing programs: ${missing_programs[*]}"
        exit 1
    fi
else
    missing=()
    for package in "${packages[@]}"; do
        installed "$package" || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "all system packages present (${packages[*]})"
    else
        if [ "${as_root[0]:-}" = false ]; then
            say "need root (or sudo) to install: ${missing[*]}"
            exit 1
        fi
        say "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
        say "installed: ${missing[*]}"
    fi
fi

# Debian keeps mariadbd in /usr/sbin, which a non-root PATH often lacks; the test kit looks
# there itself, so only report it.
mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
if [ -x "$mariadbd" ]; then
    say "server: $("$mariadbd" --version)"
else
    say "mariadbd not found after install"
    exit 1
fi
say "sysbench: $(sysbench --version)"

# The Rust toolchain is not installed from here: this machine reaches package registries
# only, and Debian's own cargo is older than the workspace's rust-version.
if [ -d "$HOME/.cargo/bin" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install a Rust toolchain (1.85 or newer, with rustfmt and clippy) and put cargo on PATH"
    exit 1
fi
say "rust: $(cargo --version)"
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        say "warning: 'cargo $component' is missing; CI (.ci/run) needs it"
    fi
done
