#!/usr/bin/env bash
# The browser tests (tests/browser.rs): the wgpu backend on WebGPU in headless Chromium,
# against the CPU reference in the same wasm binary. Needs Debian's chromium and
# chromium-driver (same version), the wasm32-unknown-unknown target and the
# wasm-bindgen-cli matching Cargo.lock's wasm-bindgen (`cargo install wasm-bindgen-cli
# --version <that>`). The Chromium flags are in webdriver.json (WebGPU needs
# --enable-unsafe-webgpu); no adapter fails the tests (never a skip).
set -euo pipefail
cd "$(dirname "$0")/.."
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
# Per-test limit of wasm-bindgen-test-runner (default 20 s): the demo model's 48
# decode steps take ~60 s on SwiftShader (its decode matmul, see README).
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-400}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The runner is set in .cargo/config.toml (wasm-bindgen-test-runner).
cargo test --target wasm32-unknown-unknown --test browser -- --nocapture 2>&1 | tee "$log"
# The adapter must have been found and logged, and every test must have run.
grep -q '^WebGPU adapter: ' "$log" || { echo "browser tests: no WebGPU adapter was logged" >&2; exit 1; }
grep -Eq '^test result: ok\. [1-9][0-9]* passed; 0 failed' "$log" || { echo "browser tests: no passing test result" >&2; exit 1; }
