#!/usr/bin/env bash
# Builds every Lambda function (a `bootstrap` per function under target/lambda/<name>/) for
# Amazon Linux 2023 with cargo-lambda and zig, both from PyPI, installed into .venv.
# Usage: infra/build-lambdas.sh [--x86-64|--arm64]   (default: --arm64, the template's default)
#        infra/build-lambdas.sh --tools-only   (only install cargo-lambda and zig, e.g. for
#                                               `PATH=.venv/bin:$PATH sam build --beta-features`)
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:---arm64}"

if ! .venv/bin/python -m pip show cargo-lambda 2>/dev/null | grep -qx "Version: 1.9.2"; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "cargo-lambda==1.9.2" "ziglang==0.17.1"
fi
[ "$arch" = "--tools-only" ] && exit 0
export PATH="$PWD/.venv/bin:$PATH"
if [ "$arch" = "--arm64" ]; then
    rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

functions=(discovery policy enroll auth manage renew admin ca-setup)
packages=()
for f in "${functions[@]}"; do packages+=(-p "winmdm-fn-$f"); done
cargo lambda build --release "$arch" "${packages[@]}"

dir="${CARGO_TARGET_DIR:-target}/lambda"
for f in "${functions[@]}"; do
    test -x "$dir/$f/bootstrap" || { echo "missing $dir/$f/bootstrap" >&2; exit 1; }
    printf '%-10s %s bytes\n' "$f" "$(stat -c %s "$dir/$f/bootstrap")"
done
