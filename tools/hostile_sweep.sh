#!/usr/bin/env bash
# Runs examples/generate over the hostile corpus (tools/make_hostile_corpus.py) in a
# release and a debug build, under a virtual-memory limit and a timeout, and requires
# each case to exit 0, or exit 1 with an `error: ...` line and no panic. A panic
# (101), an abort (134), an OOM kill (137/SIGKILL), a timeout (124) or an exit 1
# without a message is a failure. Prints one line per failure and a summary per build.
#
# usage: tools/hostile_sweep.sh [CORPUS_DIR]   (default: target/hostile_corpus)
# env:   PROFILES="release debug"  MEM_KB=8388608  TIMEOUT=120  BACKEND=auto  JOBS=2
#        EXTRA_ARGS="..." (more generate flags). A case's ARGS file adds flags too.
set -u
cd "$(dirname "$0")/.."
corpus=${1:-target/hostile_corpus}
export MEM_KB=${MEM_KB:-8388608} TIMEOUT=${TIMEOUT:-120} BACKEND=${BACKEND:-auto}
export EXTRA_ARGS=${EXTRA_ARGS:-}
jobs=${JOBS:-2}
export LOG_DIR=target/hostile_sweep
mkdir -p "$LOG_DIR"

# One case: prints "<verdict-class>\t<name>\t<detail>".
one() {
    local bin=$1 dir=$2 name err rc msg args=""
    name=$(basename "$dir")
    err="$LOG_DIR/$PROFILE.$name.err"
    [ -f "$dir/ARGS" ] && args=$(cat "$dir/ARGS")
    (
        ulimit -v "$MEM_KB"
        # shellcheck disable=SC2086
        exec timeout -k 5 "$TIMEOUT" "$bin" --model "$dir" --max-new-tokens 2 \
            --backend "$BACKEND" $args $EXTRA_ARGS
    ) >/dev/null 2>"$err"
    rc=$?
    msg=$(grep '^error: ' "$err" | grep -v XDG_RUNTIME_DIR | head -1 | cut -c1-240)
    if [ $rc -eq 0 ]; then
        printf 'ok0\t%s\texit 0\n' "$name"
        rm -f "$err"
    elif [ $rc -eq 1 ] && [ -n "$msg" ] && ! grep -q "panicked" "$err"; then
        printf 'ok1\t%s\t%s\n' "$name" "$msg"
    else
        printf 'FAIL\t%s\trc=%s %s\n' "$name" "$rc" \
            "$(grep -m1 -E 'panicked|error|memory|abort' "$err" | cut -c1-240)"
    fi
}
export -f one

python3 tools/make_hostile_corpus.py "$corpus" >/dev/null || exit 2
total_fail=0
for profile in ${PROFILES:-release debug}; do
    flag=""
    [ "$profile" = release ] && flag="--release"
    cargo build $flag --example generate -q || exit 2
    export PROFILE=$profile
    bin=target/$profile/examples/generate
    start=$(date +%s)
    ls -d "$corpus"/*/ | xargs -P "$jobs" -I{} bash -c 'one "$0" "$1"' "$bin" {} \
        | sort -k2 >"$LOG_DIR/$profile.txt"
    ok0=$(grep -c '^ok0' "$LOG_DIR/$profile.txt")
    ok1=$(grep -c '^ok1' "$LOG_DIR/$profile.txt")
    fail=$(grep -c '^FAIL' "$LOG_DIR/$profile.txt")
    grep '^FAIL' "$LOG_DIR/$profile.txt" | sed "s/^/$profile /"
    echo "== $profile: $((ok0 + ok1 + fail)) cases in $(($(date +%s) - start)) s: $ok0 exit 0, $ok1 clear exit-1 errors, $fail failures (details: $LOG_DIR/$profile.txt)"
    total_fail=$((total_fail + fail))
done
[ "$total_fail" -eq 0 ]
