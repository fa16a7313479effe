#!/usr/bin/env bash
# Builds the browser demo (examples/web_demo.rs -> web/pkg/) and serves web/ at
# http://localhost:${PORT:-8000}/ (python3 -m http.server). Needs the
# wasm32-unknown-unknown target and the wasm-bindgen-cli matching Cargo.lock's
# wasm-bindgen. `--build-only` builds and exits (used by tools/web_page_check.sh).
# Open the page in a browser with WebGPU (Chrome/Edge; Chromium on Linux needs
# --enable-unsafe-webgpu).
set -euo pipefail
cd "$(dirname "$0")/.."
# The test profile (optimised, see Cargo.toml) shares its compiled dependencies with
# the browser tests (tools/browser_test.sh).
cargo build --profile test --example web_demo --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  target/wasm32-unknown-unknown/debug/examples/web_demo.wasm
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi
echo "serving http://localhost:${PORT:-8000}/"
cd web && exec python3 -m http.server "${PORT:-8000}"
