#!/usr/bin/env bash
# Runs every check and every test of winmdm on a fresh machine: formatting, clippy, unit
# tests, and the end-to-end tests (an emulated Windows device and operator against
# winmdm-local). Everything the tests need is installed by this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
