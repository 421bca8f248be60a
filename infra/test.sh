#!/usr/bin/env bash
# Runs every check and every test of winmdm on a fresh machine: formatting, clippy, unit
# tests, the end-to-end tests (an emulated Windows device and operator against
# winmdm-local) and the AWS adapter tests against moto. Everything the tests need is
# installed by this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

# The openssl command line: the independent verifier of the certificates the KMS CA issues.
if ! command -v openssl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q openssl >/dev/null; else sudo apt-get install -y -q openssl >/dev/null; fi
fi

# The console's browser test: Debian's Chromium (never a browser a tool downloads) and
# playwright-core (pinned in tests/browser/package-lock.json) to drive it.
if ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
    "${apt_get[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium chromium-driver >/dev/null
fi
if ! [ -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
export WINMDM_BROWSER_TESTS=1

# moto, the AWS emulator (DynamoDB with transactions, ACM PCA, KMS, S3, Secrets Manager),
# for the AWS adapter tests:
# pinned, in a local venv; each test starts its own server on a free loopback port.
# cfn-lint checks template.yaml.
MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
if ! .venv/bin/python -m pip show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION" \
    || ! .venv/bin/python -m pip show cfn-lint 2>/dev/null | grep -qx "Version: $CFN_LINT_VERSION"; then
    [ -x .venv/bin/python ] || python3 -m venv .venv \
        || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv .venv; }
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION"
fi
export WINMDM_MOTO_SERVER="$PWD/.venv/bin/moto_server"
# What moto accepts, where the SDK's default chain (winmdm-local's, as on AWS) reads it:
# set here, before any test thread runs, so no test writes the environment while others
# read it (`winmdm_e2e::moto::aws_test_environment`).
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1

.venv/bin/cfn-lint template.yaml
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
