#!/usr/bin/env bash
# llama.cpp as a CPU peer of mamba-gpu, on the same random mamba-130m-shaped weights.
#
# Opt-in (never run by .ci/run or the default cargo build): it downloads a 77 MB sdist,
# builds llama.cpp from it and needs Python with torch (for convert_hf_to_gguf.py).
#
#   tools/llama_cpp_peer.sh [--runs N] [--gen N] [--step STEP]
#     --runs N    interleaved rounds (default 3); the table gives the median and every round
#     --gen N     greedy tokens compared between llama.cpp and ours (default 32, at most 64)
#     --step S    only one step: fetch | build | checkpoint | convert | greedy | bench | all (default)
#
# Environment:
#   MAMBA_GPU_LLAMA_DIR  cache for the sdist, the llama.cpp build, the checkpoint and the
#                        GGUF files (default $HOME/.cache/mamba-gpu-llama)
#   PYTHON               a Python with torch, numpy (and transformers) for the converter
#                        (default /opt/pyref/bin/python if present, else python3)
#   JOBS                 parallel build jobs (default 2); builds run under nice -n 19
#   CARGO_TARGET_DIR     where the peers binary is built (default $CACHE/cargo-target)
#
# What it does, each step skipped when its output is already there:
#   1. pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 (sdist,
#      sha256 checked); it vendors ggml-org/llama.cpp@0c1e57098 under vendor/llama.cpp.
#   2. cmake build of llama-bench and llama-quantize (GGML_NATIVE, with AMX disabled: under
#      KVM this Xeon advertises AMX, and the AMX Q8_0 kernels die with SIGILL), and of
#      tools/llama_greedy_ids.cpp against the built libllama.
#   3. benches/peers --write-hf: the random checkpoint as a Hugging Face directory
#      (vocab 50280, already a multiple of 8, so the converter pads nothing; no tokenizer
#      files, so it takes llama.cpp's built-in GPT-NeoX vocabulary, cut to 50280 ids).
#   4. convert_hf_to_gguf.py --outtype f32 / f16, llama-quantize F32 -> Q8_0.
#   5. Greedy ids: the same 16 prompt ids to llama.cpp (argmax of the logits, F32 and F16)
#      and to ours (f32, f16); how many of the first --gen generated ids agree.
#   6. --runs rounds, each: llama-bench -t 2 -p 512 -n 64 -r 1 on F32, F16, Q8_0, then
#      ours (mamba-gpu-peers --only ours --runs 1: decode batch 1, prefill 512, f32/f16/bf16),
#      with the load average before and after every round; one table at the end.
set -euo pipefail

die() {
    echo "llama_cpp_peer.sh: error: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MAMBA_GPU_LLAMA_DIR:-$HOME/.cache/mamba-gpu-llama}
JOBS=${JOBS:-2}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x /opt/pyref/bin/python ]]; then PYTHON=/opt/pyref/bin/python; else PYTHON=python3; fi
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/cargo-target}

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_COMMIT=0c1e57098
SRC=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$CACHE/build
CKPT=$CACHE/mamba-130m-random-hf
GGUF=$CACHE/gguf
NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
PEERS=$CARGO_TARGET_DIR/release/mamba-gpu-peers

RUNS=3
GEN=32
STEP=all
while [[ $# -gt 0 ]]; do
    case $1 in
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --gen) GEN=${2:?--gen needs a number}; shift 2 ;;
        --step) STEP=${2:?--step needs a name}; shift 2 ;;
        -h | --help) sed -n '2,32p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got $RUNS"
[[ $GEN =~ ^[1-9][0-9]*$ && $GEN -le 64 ]] || die "--gen must be in 1..64, got $GEN"
mkdir -p "$CACHE"

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# ------------------------------------------------------------------ 1. fetch
step_fetch() {
    local tgz=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
    if [[ ! -f $tgz ]]; then
        log "downloading the llama-cpp-python $VERSION sdist"
        # --no-binary only for this package: its build backend (scikit-build-core) may come
        # as a wheel; --no-binary :all: would build cmake from source to read the metadata.
        "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$VERSION" -d "$CACHE/sdist" >&2 ||
            die "pip download of llama-cpp-python==$VERSION failed"
    fi
    [[ -f $tgz ]] || die "pip did not leave $tgz"
    echo "$SDIST_SHA256  $tgz" | sha256sum -c --quiet - ||
        die "$tgz does not have the expected sha256 $SDIST_SHA256"
    if [[ ! -f $SRC/CMakeLists.txt ]]; then
        log "unpacking $tgz"
        tar -xzf "$tgz" -C "$CACHE"
    fi
    grep -q "llama.cpp@$LLAMA_COMMIT" "$CACHE/llama_cpp_python-$VERSION/CHANGELOG.md" ||
        die "the sdist's CHANGELOG does not name llama.cpp@$LLAMA_COMMIT"
    [[ -f $SRC/convert_hf_to_gguf.py ]] || die "no $SRC/convert_hf_to_gguf.py in the sdist"
}

# ------------------------------------------------------------------ 2. build
step_build() {
    need cmake "install it (apt-get install -y cmake, or pip install cmake)"
    need c++ "a C++17 compiler is needed"
    local stamp=$BUILD/.mamba-gpu-flags
    local flags="Release;GGML_NATIVE=ON;$NOAMX;shared"
    if [[ ! -f $BUILD/CMakeCache.txt || "$(cat "$stamp" 2>/dev/null)" != "$flags" ]]; then
        log "configuring llama.cpp in $BUILD"
        rm -rf "$BUILD"
        cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
            -DGGML_NATIVE=ON -DCMAKE_C_FLAGS="$NOAMX" -DCMAKE_CXX_FLAGS="$NOAMX" \
            -DBUILD_SHARED_LIBS=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF >&2 ||
            die "cmake configure failed"
        echo "$flags" >"$stamp"
    fi
    log "building llama-bench llama-quantize (nice -n 19, -j$JOBS)"
    nice -n 19 cmake --build "$BUILD" --target llama-bench llama-quantize -j "$JOBS" >&2 ||
        die "llama.cpp build failed"
    local bin=$BUILD/bin
    [[ -x $bin/llama-bench && -x $bin/llama-quantize ]] || die "no llama-bench/llama-quantize in $bin"
    local tool=$REPO/tools/llama_greedy_ids.cpp
    if [[ ! -x $bin/llama-greedy-ids || $tool -nt $bin/llama-greedy-ids ]]; then
        log "building $bin/llama-greedy-ids"
        nice -n 19 c++ -std=c++17 -O2 $NOAMX "$tool" -I "$SRC/include" -I "$SRC/ggml/include" \
            -L "$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$bin/llama-greedy-ids" ||
            die "building llama-greedy-ids failed"
    fi
    need cargo "the Rust toolchain is needed for benches/peers"
    log "building mamba-gpu-peers (nice -n 19, -j$JOBS) into $CARGO_TARGET_DIR"
    nice -n 19 cargo build -j "$JOBS" --release --ignore-rust-version \
        --manifest-path "$REPO/benches/peers/Cargo.toml" >&2 || die "cargo build of benches/peers failed"
    [[ -x $PEERS ]] || die "no $PEERS after cargo build"
}

# ------------------------------------------------------------------ 3. checkpoint
step_checkpoint() {
    [[ -x $PEERS ]] || die "no $PEERS: run --step build first"
    if [[ ! -f $CKPT/model.safetensors || ! -f $CKPT/config.json ]]; then
        log "writing the random checkpoint to $CKPT"
        "$PEERS" --write-hf "$CKPT" >&2 || die "mamba-gpu-peers --write-hf failed"
    fi
    grep -q '"vocab_size": 50280' "$CKPT/config.json" ||
        die "$CKPT/config.json is not the mamba-gpu-peers checkpoint (vocab_size 50280); remove $CKPT"
}

# ------------------------------------------------------------------ 4. convert
gguf_path() { echo "$GGUF/mamba-130m-random-$1.gguf"; }

step_convert() {
    "$PYTHON" -c 'import torch, numpy, transformers' 2>/dev/null ||
        die "$PYTHON lacks torch/numpy/transformers, needed by convert_hf_to_gguf.py (set PYTHON)"
    mkdir -p "$GGUF"
    local t out
    for t in f32 f16; do
        out=$(gguf_path "${t^^}")
        if [[ ! -f $out || $CKPT/model.safetensors -nt $out ]]; then
            log "convert_hf_to_gguf.py --outtype $t -> $out"
            nice -n 19 "$PYTHON" "$SRC/convert_hf_to_gguf.py" "$CKPT" --outtype "$t" \
                --outfile "$out.partial" >&2 || die "convert_hf_to_gguf.py --outtype $t failed"
            mv "$out.partial" "$out"
        fi
    done
    out=$(gguf_path Q8_0)
    if [[ ! -f $out || $(gguf_path F32) -nt $out ]]; then
        log "llama-quantize F32 -> Q8_0"
        nice -n 19 "$BUILD/bin/llama-quantize" "$(gguf_path F32)" "$out.partial" Q8_0 2 >&2 ||
            die "llama-quantize failed"
        mv "$out.partial" "$out"
    fi
    PYTHONPATH=$SRC/gguf-py "$PYTHON" "$REPO/tools/llama_cpp_peer.py" types \
        "$(gguf_path F32)" "$(gguf_path F16)" "$(gguf_path Q8_0)"
}

# ------------------------------------------------------------------ 5. greedy ids
OUT=$CACHE/runs/$(date -u +%Y%m%dT%H%M%SZ)

need_inputs() { # the binaries and GGUF files that the greedy and bench steps use
    local f
    for f in "$PEERS" "$BUILD/bin/llama-bench" "$BUILD/bin/llama-greedy-ids"; do
        [[ -x $f ]] || die "no $f: run --step build first"
    done
    [[ -f $CKPT/model.safetensors ]] || die "no checkpoint in $CKPT: run --step checkpoint first"
    for f in F32 F16 Q8_0; do
        [[ -f $(gguf_path $f) ]] || die "no $(gguf_path $f): run --step convert first"
    done
}

ours() { # ours ARGS...: mamba-gpu-peers on the checkpoint, only mamba-gpu
    "$PEERS" --reuse --dir "$CKPT" --only ours "$@"
}

step_greedy() {
    need_inputs
    mkdir -p "$OUT"
    log "greedy ids: ours (f32, f16, bf16)"
    ours --runs 1 --prefill 0 --check 4 --json "$OUT/greedy-ours.json" >"$OUT/greedy-ours.md" ||
        die "mamba-gpu-peers (greedy) failed; see $OUT/greedy-ours.md"
    local prompt q args=()
    prompt=$("$PYTHON" "$REPO/tools/llama_cpp_peer.py" prompt "$OUT/greedy-ours.json")
    for q in F32 F16 Q8_0; do
        log "greedy ids: llama.cpp $q"
        # shellcheck disable=SC2086 # the prompt is a list of ids
        "$BUILD/bin/llama-greedy-ids" "$(gguf_path $q)" "$GEN" 2 $prompt \
            >"$OUT/greedy-llama-$q.txt" 2>"$OUT/greedy-llama-$q.log" ||
            die "llama-greedy-ids on $q failed; see $OUT/greedy-llama-$q.log"
        args+=("$q=$OUT/greedy-llama-$q.txt")
    done
    echo
    echo "## Greedy ids, llama.cpp against mamba-gpu ($GEN tokens after the same prompt)"
    echo
    "$PYTHON" "$REPO/tools/llama_cpp_peer.py" greedy "$GEN" "$OUT/greedy-ours.json" "${args[@]}" |
        tee "$OUT/greedy.md"
}

# ------------------------------------------------------------------ 6. bench rounds
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# Other processes using the CPU (ps %CPU over their lifetime, at least 20%), this script's
# own children excluded: on a shared machine they explain the outlier rounds.
busy() {
    ps -eo pid=,ppid=,pcpu=,comm= | awk -v me=$$ '$2 != me && $1 != me && $3 >= 20 {
        printf "%s%s %s%%", sep, $4, $3; sep = ", " } END { if (!sep) printf "none" }'
}

llama_round() {
    local r=$1 q
    for q in F32 F16 Q8_0; do
        log "round $r: llama-bench $q"
        "$BUILD/bin/llama-bench" -m "$(gguf_path $q)" -t 2 -p 512 -n 64 -r 1 -o json \
            >"$OUT/round$r-llama-$q.json" 2>"$OUT/round$r-llama-$q.log" ||
            die "llama-bench on $q failed; see $OUT/round$r-llama-$q.log"
    done
}

ours_round() {
    local r=$1
    log "round $r: mamba-gpu-peers --only ours"
    ours --runs 1 --json "$OUT/round$r-ours.json" >"$OUT/round$r-ours.md" 2>"$OUT/round$r-ours.log" ||
        die "mamba-gpu-peers failed in round $r; see $OUT/round$r-ours.log"
}

step_bench() {
    need_inputs
    mkdir -p "$OUT"
    local r before after others
    : >"$OUT/load.md"
    for ((r = 1; r <= RUNS; r++)); do
        before=$(loadavg)
        others=$(busy)
        # alternate which engine goes first, so that a drift in load does not favour one
        if ((r % 2)); then llama_round "$r"; ours_round "$r"; else ours_round "$r"; llama_round "$r"; fi
        after=$(loadavg)
        others="$others / $(busy)"
        echo "| $r | $( ((r % 2)) && echo yes || echo no) | $before | $after | $others |" >>"$OUT/load.md"
    done
    echo
    echo "## Throughput, llama.cpp ($LLAMA_COMMIT) against mamba-gpu, $RUNS interleaved rounds"
    echo
    echo "llama-bench -t 2 -p 512 -n 64 -r 1 (pp512: one 512-token batch; tg64: 64 tokens from an"
    echo "empty context); mamba-gpu-peers --only ours --runs 1 (decode: 64 greedy steps after a"
    echo "16-token prompt, full logits + argmax each; prefill: one 512-token pass + last logits)."
    echo
    "$PYTHON" "$REPO/tools/llama_cpp_peer.py" table "$OUT" "$RUNS" | tee "$OUT/table.md"
    echo
    echo "| round | llama.cpp first | load avg before (1/5/15 min) | after | other busy processes before / after |"
    echo "|---:|---:|---|---|---|"
    cat "$OUT/load.md"
    echo
    echo "results and logs: $OUT"
}

# ------------------------------------------------------------------ main
case $STEP in
    fetch) step_fetch ;;
    build) step_fetch; step_build ;;
    checkpoint) step_checkpoint ;;
    convert) step_convert ;;
    greedy) step_greedy ;;
    bench) step_bench ;;
    all)
        echo "llama.cpp peer on: $(lscpu | sed -n "s/^Model name: *//p")"
        echo "build: GGML_NATIVE=ON, CFLAGS/CXXFLAGS $NOAMX; cache $CACHE"
        step_fetch; step_build; step_checkpoint; step_convert; step_greedy; step_bench ;;
    *) die "unknown --step $STEP (fetch, build, checkpoint, convert, greedy, bench, all)" ;;
esac
