#!/usr/bin/env bash
# Builds the Lambda functions (a `bootstrap` per function under target/lambda/<name>/) for
# Amazon Linux 2023 with cargo-lambda and zig, both from PyPI, installed into .venv.
# Usage: infra/build-lambdas.sh [--x86-64|--arm64] [function ...]
#            (default: --arm64, the template's default; every function)
#        infra/build-lambdas.sh --tools-only   (only install cargo-lambda and zig, e.g. for
#                                               `PATH=.venv/bin:$PATH sam build --beta-features`)
# Each function is its own cargo invocation, as `sam build` does it: cargo unifies the
# features of the packages built together, and each function enables only the adapters
# its handler calls (functions/<name>/Cargo.toml), so building them together would link
# every SDK into every function. `hello` builds the cold-start reference
# (infra/hello-lambda) with the same profile.
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:---arm64}"
shift || true

if ! .venv/bin/python -m pip show cargo-lambda 2>/dev/null | grep -qx "Version: 1.9.2"; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "cargo-lambda==1.9.2" "ziglang==0.17.1"
fi
[ "$arch" = "--tools-only" ] && exit 0
export PATH="$PWD/.venv/bin:$PATH"
if [ "$arch" = "--arm64" ]; then
    rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

functions=("$@")
[ ${#functions[@]} -gt 0 ] || functions=(discovery policy enroll auth manage renew admin ca-setup checkin-counts)
dir="${CARGO_TARGET_DIR:-target}/lambda"
for f in "${functions[@]}"; do
    case "$f" in
        hello) package=winmdm-hello-lambda ;;
        *) package="winmdm-fn-$f" ;;
    esac
    cargo lambda build --release "$arch" -p "$package"
    test -x "$dir/$f/bootstrap" || { echo "missing $dir/$f/bootstrap" >&2; exit 1; }
    printf '%-10s %s bytes\n' "$f" "$(stat -c %s "$dir/$f/bootstrap")"
done
