#!/usr/bin/env bash
# CI check of the demo page (web/): builds it, serves it, opens it in headless Chromium
# with WebGPU and reads the page's console (Chromium's --enable-logging=stderr): the
# page must load the model and stream text piece by piece ("DEMO PIECE" lines, at least
# two), finish ("DEMO DONE" with the token rates) and run the scan benchmark
# ("DEMO BENCH"). Any "DEMO ERROR", or nothing within the time limit, fails.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/serve_web.sh --build-only
port=${PORT:-8765}
log=$(mktemp)
profile=$(mktemp -d)
server=""
browser=""
# Chromium runs in its own process group (setsid) so that its renderer and GPU
# processes die with it; they write into the profile until they exit, so the profile is
# removed only after the group is gone. Clean-up never decides the check's result.
cleanup() {
  local rc=$?
  if [ -n "$browser" ]; then
    kill -- "-$browser" 2>/dev/null || true
    wait "$browser" 2>/dev/null || true
    for _ in $(seq 20); do
      pgrep -g "$browser" >/dev/null 2>&1 || break
      sleep 0.5
    done
    kill -9 -- "-$browser" 2>/dev/null || true
  fi
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$log" "$profile" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
(cd web && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
sleep 1
setsid chromium --headless=new --no-sandbox --enable-unsafe-webgpu --disable-gpu-sandbox \
  --disable-background-networking --disable-component-update --disable-sync \
  --no-first-run --user-data-dir="$profile" --enable-logging=stderr --v=0 \
  "http://127.0.0.1:$port/index.html?autorun" 2>"$log" >/dev/null &
browser=$!
limit=${WEB_CHECK_TIMEOUT:-300}
for _ in $(seq "$limit"); do
  if grep -q '"DEMO ERROR' "$log" || grep -q '"DEMO BENCH' "$log"; then
    break
  fi
  if ! kill -0 "$browser" 2>/dev/null; then
    break
  fi
  sleep 1
done
grep -o '"DEMO [A-Z]*.*", source' "$log" | sed 's/", source$//; s/^"//' || true
if grep -q '"DEMO ERROR' "$log"; then
  echo "web page check: the page reported an error" >&2
  exit 1
fi
pieces=$(grep -c '"DEMO PIECE' "$log" || true)
if ! grep -q '"DEMO LOADED' "$log" || ! grep -q '"DEMO DONE' "$log" || [ "$pieces" -lt 2 ] \
  || ! grep -q '"DEMO BENCH' "$log"; then
  echo "web page check: the page did not load, stream (pieces: $pieces), finish and bench within ${limit} s" >&2
  tail -20 "$log" >&2
  exit 1
fi
echo "web page check: the page streamed $pieces pieces"
