#!/usr/bin/env bash
# Build the official mamba_ssm selective-scan forward (forward-only, see setup.py) on the
# GPU machine and time it (bench.py) in our bench's shapes. One command, restartable.
#
#   tools/official_scan/run.sh [BENCH ARGS...]   # build if needed (in the background),
#                                                # wait for it, then bench
#   tools/official_scan/run.sh --background      # start the build and return at once
#   tools/official_scan/run.sh --wait            # wait for a started build (exit 0 when
#                                                # built, 3 still running, 1 failed)
#   tools/official_scan/run.sh --build-only      # build in the foreground, no bench
#   tools/official_scan/run.sh --bench-only [BENCH ARGS...]
#   tools/official_scan/run.sh --status | --clean
#
# Why a background build: a device command is stopped after 10 minutes, and processes it
# leaves behind are killed when it returns, except those in their own session (setsid),
# which live until the machine is given back (about 30 s after the last command ends).
# So the build runs under setsid and keeps its state in a fixed folder
# ($OFFICIAL_SCAN_DIR, default /tmp/official_scan_build), and each call picks up where
# the last one left off. The recipe for the GPU session:
#
#   call 1:  tools/official_scan/run.sh       # starts the build, waits up to
#                                             # $OFFICIAL_SCAN_WAIT_S (480 s), benches
#   if it says "still building": call 2, the same command, within 30 s of call 1's end
#   (else the machine, build and all, is gone and the next call starts from scratch).
#
# Or start it early and do other work meanwhile: `run.sh --background` first thing in a
# command (tools/gpu_check.sh run does this before our tests), `run.sh` at its end.
# How long: compiled off the GPU machine (pip's nvcc 13.0, torch 2.15, sm_90 only) it took
# 185 s on one busy core, about 50 s per forward .cu; ninja runs the five in parallel.
# A build interrupted by its own time limit (OFFICIAL_SCAN_BUILD_TIMEOUT, default 1500 s)
# resumes where ninja left off; any other failure stops with the log's tail: look at it,
# fix, then `--clean`.
#
# Inputs: the sdist mamba_ssm-*.tar.gz from .gpu/official/ (tools/gpu_check.sh build puts
# it there; or set MAMBA_SSM_SDIST). Python: $PYTHON, else the python3 that imports torch.
# Outputs, under $OUT (or .gpu/logs): official_scan_build.log (the build, copied from the
# build folder at each exit), official_scan.md (the report with the table) and
# official_scan_bench.log (bench.py's output).
# Environment passed through: TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 16),
# CUDA_HOME, OFFICIAL_SCAN_STD, OFFICIAL_SCAN_STRICT_CUDA (see setup.py).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${OFFICIAL_SCAN_DIR:-/tmp/official_scan_build}"
out="${OUT:-$root/.gpu/logs}"
wait_s="${OFFICIAL_SCAN_WAIT_S:-480}"
build_timeout="${OFFICIAL_SCAN_BUILD_TIMEOUT:-1500}"
sdist_sha256=104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONUNBUFFERED=1

say() { echo "official_scan: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
mkdir -p "$dir" || die "cannot create $dir"

# The modes that report: each exit leaves the (persistent) build log in $OUT, which is
# emptied between calls.
save_log() { [[ -f "$dir/build.log" ]] && cp "$dir/build.log" "$out/official_scan_build.log" 2>/dev/null; true; }
init_out() { mkdir -p "$out" || die "cannot create $out"; trap save_log EXIT; }

# ---------------------------------------------------------------------------------------
find_python() {
    local c
    for c in "${PYTHON:-}" python3 /opt/torch/.venv/bin/python3 python; do
        [[ -n "$c" ]] || continue
        if "$c" -c 'import torch' >/dev/null 2>&1; then echo "$c"; return 0; fi
    done
    return 1
}
# --status and --clean need no python: an empty PY is checked where it is used.
PY="$(find_python)" || PY=""
need_py() { [[ -n "$PY" ]] || die "no python with torch found (set PYTHON)"; }
# ninja (pip's, in the venv's bin) is found by torch through PATH; nvcc likewise.
[[ -n "$PY" ]] && PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
if [[ -n "${CUDA_HOME:-}" ]]; then
    PATH="$CUDA_HOME/bin:$PATH"
elif ! command -v nvcc >/dev/null; then
    for d in /usr/local/cuda /usr/local/cuda-*; do
        if [[ -x "$d/bin/nvcc" ]]; then export CUDA_HOME="$d"; PATH="$d/bin:$PATH"; break; fi
    done
fi
export PATH

find_sdist() {
    if [[ -n "${MAMBA_SSM_SDIST:-}" ]]; then echo "$MAMBA_SSM_SDIST"; return; fi
    local f
    for f in "$root"/.gpu/official/mamba_ssm-*.tar.gz; do [[ -f "$f" ]] && { echo "$f"; return; }; done
}

# The unpacked sdist root (mamba_ssm-VERSION/ under $dir/src), unpacking it once.
src_root() {
    local s
    s="$(ls -d "$dir"/src/mamba_ssm-*/ 2>/dev/null | head -1)"
    if [[ -z "$s" ]]; then
        local sdist
        sdist="$(find_sdist)"
        [[ -f "$sdist" ]] || die "no mamba_ssm sdist: run 'tools/gpu_check.sh build' here first (puts it in .gpu/official/), or set MAMBA_SSM_SDIST"
        mkdir -p "$dir/src" && tar -xzf "$sdist" -C "$dir/src" || die "cannot unpack $sdist"
        s="$(ls -d "$dir"/src/mamba_ssm-*/ 2>/dev/null | head -1)"
        [[ -n "$s" ]] || die "$sdist holds no mamba_ssm-*/ folder"
        sha256sum "$sdist" > "$dir/src/SDIST_SHA256" 2>/dev/null
        # PyPI's mamba_ssm-2.3.2.post1.tar.gz, as downloaded on 2026-11-22: informative only
        grep -q "^$sdist_sha256 " "$dir/src/SDIST_SHA256" \
            || say "note: $(basename "$sdist") is not the 2.3.2.post1 sdist checked here (sha256 differs)"
    fi
    echo "${s%/}"
}

built_so() { ls "$dir"/lib/selective_scan_cuda*.so 2>/dev/null | head -1; }

# built | running | failed | interrupted | none
state() {
    local pid rc
    if [[ -f "$dir/build.rc" ]]; then
        rc="$(cat "$dir/build.rc")"
        if [[ "$rc" == 0 && -n "$(built_so)" ]]; then echo built; return; fi
        # 124/137: timeout's TERM/KILL; ninja resumes from the objects already built
        if [[ "$rc" == 124 || "$rc" == 137 ]]; then echo interrupted; return; fi
        echo failed; return
    fi
    pid="$(cat "$dir/build.pid" 2>/dev/null)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then echo running; return; fi
    # started a moment ago and not yet written its pid
    if [[ -f "$dir/build.started" ]] && (( $(date +%s) - $(cat "$dir/build.started") < 10 )); then
        echo running; return
    fi
    echo none
}

progress() {   # objects done, of the 5 sources
    local n
    n="$(find "$dir/tmp" -name '*.o' 2>/dev/null | wc -l)"
    echo "$n/5 objects"
}

# ---------------------------------------------------------------------------------------
# The build itself (foreground; the background mode runs this under setsid).
build_worker() {
    need_py
    echo $$ > "$dir/build.pid"
    rm -f "$dir/build.rc"
    local t0=$SECONDS src
    echo "== official_scan build $(date -u +%FT%TZ) (pid $$)"
    src="$(src_root)" || { echo 1 > "$dir/build.rc"; exit 1; }
    echo "sdist: $(cat "$dir/src/SDIST_SHA256" 2>/dev/null) -> $src"
    echo "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1))"
    echo "nvcc: $(command -v nvcc || echo "not on PATH (CUDA_HOME=${CUDA_HOME:-unset})")"
    command -v nvcc >/dev/null && nvcc --version 2>&1 | tail -2
    echo "ninja: $(command -v ninja || echo 'none: serial build, not resumable') $(ninja --version 2>/dev/null)"
    echo "gcc: $(gcc --version 2>/dev/null | head -1)"
    echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS timeout=${build_timeout}s"
    # setuptools may write next to the working directory: work inside $dir.
    cd "$dir" || exit 1
    MAMBA_SSM_SRC="$src" timeout --kill-after=15 "$build_timeout" \
        "$PY" "$here/setup.py" build_ext --build-temp "$dir/tmp" --build-lib "$dir/lib"
    local rc=$?
    if [[ $rc -eq 0 && -z "$(built_so)" ]]; then
        echo "setup.py succeeded but no selective_scan_cuda*.so in $dir/lib"; rc=1
    fi
    echo "== official_scan build rc=$rc after $((SECONDS - t0)) s ($(progress)); $(built_so)"
    echo $rc > "$dir/build.rc"
    exit $rc
}

start_build() {
    need_py
    local s
    s="$(state)"
    case "$s" in
        built) say "already built: $(built_so)"; return 0 ;;
        running) say "build already running (pid $(cat "$dir/build.pid" 2>/dev/null)), $(progress)"; return 0 ;;
        failed)
            say "the last build FAILED (rc $(cat "$dir/build.rc")); its log ends:"
            tail -40 "$dir/build.log" >&2
            die "fix the cause, then '$0 --clean' and run again" ;;
    esac
    [[ "$s" == interrupted ]] && say "resuming an interrupted build ($(progress))"
    src_root >/dev/null || exit 1   # fail here, loudly, if the sdist is missing
    # Static checks in the foreground: a mismatch is reported now, not in the log.
    MAMBA_SSM_SRC="$(src_root)" "$PY" "$here/setup.py" --check >&2 || die "setup.py --check failed"
    rm -f "$dir/build.rc"
    date +%s > "$dir/build.started"
    [[ -f "$dir/build.log" ]] && echo "== (restart)" >> "$dir/build.log"
    setsid nohup bash "$here/run.sh" --build-worker >> "$dir/build.log" 2>&1 < /dev/null &
    say "build started in the background (setsid), log $dir/build.log"
}

# 0 built, 3 still running after the wait, 1 failed
wait_build() {
    local t0=$SECONDS last=0 s
    while :; do
        s="$(state)"
        case "$s" in
            built) say "built in $(( $(stat -c %Y "$dir/build.rc") - $(cat "$dir/build.started" 2>/dev/null || stat -c %Y "$dir/build.rc") )) s: $(built_so)"; return 0 ;;
            failed|interrupted)
                say "build $s (rc $(cat "$dir/build.rc")); the log ends:"
                tail -40 "$dir/build.log" >&2
                return 1 ;;
            none) say "no build running"; return 1 ;;
        esac
        if (( SECONDS - t0 >= wait_s )); then
            say "still building after waiting ${wait_s} s ($(progress)); call again WITHIN 30 s (the machine is given back after 30 s idle, the build with it)"
            return 3
        fi
        if (( SECONDS - last >= 30 )); then
            say "building... $((SECONDS - t0)) s waited, $(progress)"
            last=$SECONDS
        fi
        sleep 5
    done
}

bench() {
    need_py
    local so src rc
    so="$(built_so)"
    [[ -n "$so" ]] || die "no built module in $dir/lib"
    src="$(src_root)" || exit 1
    # The toolkit's libcudart, appended: only used if torch's own does not satisfy the
    # extension (nvcc and torch of different CUDA majors, see setup.py).
    [[ -n "${CUDA_HOME:-}" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$CUDA_HOME/lib64"
    say "bench: $PY $here/bench.py --lib $dir/lib --src $src --out $out/official_scan.md $*"
    "$PY" "$here/bench.py" --lib "$dir/lib" --src "$src" --out "$out/official_scan.md" "$@" \
        2>&1 | tee "$out/official_scan_bench.log"
    rc=${PIPESTATUS[0]}
    [[ $rc -eq 0 ]] || say "bench.py exited $rc (see $out/official_scan_bench.log)"
    return "$rc"
}

# ---------------------------------------------------------------------------------------
# All in a function called from the last line, so that bash has read the whole file
# before running any of it: a build worker outlives the call that started it, and the
# next call may bring an edited copy of this file.
main() {
    local mode="${1:-}" s rc
    case "$mode" in
        --build-worker|--status|--clean|-h|--help) ;;
        *) init_out ;;
    esac
    case "$mode" in
        --build-worker) build_worker ;;
        --background) start_build ;;
        --wait) wait_build ;;
        --build-only)
            need_py
            s="$(state)"
            if [[ "$s" == running ]]; then wait_build; exit $?; fi
            if [[ "$s" != built ]]; then
                [[ "$s" == failed ]] && { start_build; exit 1; }
                MAMBA_SSM_SRC="$(src_root)" "$PY" "$here/setup.py" --check || die "setup.py --check failed"
                date +%s > "$dir/build.started"
                ( build_worker ) 2>&1 | tee -a "$dir/build.log"
                [[ "$(state)" == built ]] || die "build failed, see $dir/build.log"
            fi
            say "built: $(built_so)" ;;
        --bench-only) shift; bench "$@" ;;
        --status) echo "$(state) ($(progress)); $(built_so)" ;;
        --clean) [[ -f "$dir/build.pid" ]] && kill -0 "$(cat "$dir/build.pid")" 2>/dev/null \
                     && die "a build is running (pid $(cat "$dir/build.pid"))"
                 rm -rf "$dir"; echo "removed $dir" ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' ;;
        *)
            start_build || exit 1
            wait_build
            rc=$?
            [[ $rc -eq 0 ]] || exit $rc
            bench "$@" ;;
    esac
}

main "$@"; exit $?
