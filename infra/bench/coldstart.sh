#!/usr/bin/env bash
# Cold start, side by side with the floor: builds every function and the hello-world
# `lambda_http` reference (infra/hello-lambda) as deployed (release profile, x86-64,
# Amazon Linux 2023 via cargo-lambda; each function with only its own adapters), then
# starts each `bootstrap` RUNS times against the loopback Runtime API of the `coldstart`
# harness, with the template's settings and every AWS endpoint unreachable.
# Usage: infra/bench/coldstart.sh [RUNS]   (default 50)   — BENCHMARKS.md, Cold start.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-50}"
bash infra/build-lambdas.sh --x86-64 hello discovery policy enroll auth manage renew admin
cargo build --profile bench -p winmdm-bench --bin coldstart
target="${CARGO_TARGET_DIR:-target}"
"$target/release/coldstart" "$target/lambda" "$runs"
