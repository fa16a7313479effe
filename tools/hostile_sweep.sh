#!/usr/bin/env bash
# Runs examples/generate over the hostile corpus (tools/make_hostile_corpus.py) in a
# release and a debug build, under a virtual-memory limit and a timeout, and requires
# each case to exit 0, or exit 1 with an `error: ...` line and no panic. A panic
# (101), an abort (134), an OOM kill (137/SIGKILL), a timeout (124) or an exit 1
# without a message is a failure. Prints one line per failure and a summary.
#
# usage: tools/hostile_sweep.sh [CORPUS_DIR]   (default: target/hostile_corpus)
# env:   PROFILES="release debug"  MEM_KB=8388608  TIMEOUT=120  BACKEND=auto
#        EXTRA_ARGS="..." (more generate flags)
set -u
cd "$(dirname "$0")/.."
corpus=${1:-target/hostile_corpus}
profiles=${PROFILES:-release debug}
mem_kb=${MEM_KB:-8388608}
timeout_s=${TIMEOUT:-120}
backend=${BACKEND:-auto}
log_dir=target/hostile_sweep
mkdir -p "$log_dir"

python3 tools/make_hostile_corpus.py "$corpus" >/dev/null || exit 2
total_fail=0
for profile in $profiles; do
    flag=""
    [ "$profile" = release ] && flag="--release"
    cargo build $flag --example generate -q || exit 2
    bin=target/$profile/examples/generate
    ok0=0 ok1=0 fail=0
    : >"$log_dir/$profile.txt"
    for dir in "$corpus"/*/; do
        name=$(basename "$dir")
        err="$log_dir/$profile.$name.err"
        (
            ulimit -v "$mem_kb"
            exec timeout -k 5 "$timeout_s" "$bin" --model "$dir" --max-new-tokens 2 \
                --backend "$backend" ${EXTRA_ARGS:-}
        ) >/dev/null 2>"$err"
        rc=$?
        msg=$(grep -m1 '^error: ' "$err" | cut -c1-220)
        if [ $rc -eq 0 ]; then
            ok0=$((ok0 + 1))
            verdict="exit 0"
        elif [ $rc -eq 1 ] && [ -n "$msg" ] && ! grep -q "panicked" "$err"; then
            ok1=$((ok1 + 1))
            verdict="$msg"
        else
            fail=$((fail + 1))
            verdict="FAIL rc=$rc $(grep -m1 -E 'panicked|error|memory|abort' "$err" | cut -c1-220)"
            echo "$profile $name: $verdict"
        fi
        echo "$name: $verdict" >>"$log_dir/$profile.txt"
        [ $rc -ne 0 ] || rm -f "$err"
    done
    echo "== $profile: $((ok0 + ok1 + fail)) cases: $ok0 exit 0, $ok1 clear exit-1 errors, $fail failures (details: $log_dir/$profile.txt)"
    total_fail=$((total_fail + fail))
done
[ $total_fail -eq 0 ]
