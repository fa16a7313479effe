#!/usr/bin/env bash
# GGUF fixtures made by llama.cpp's own converter (tests/fixtures/gguf, checked by
# tests/gguf.rs): convert_hf_to_gguf.py from ggml-org/llama.cpp@0c1e57098, as vendored
# by the llama-cpp-python 0.3.36 sdist, run on the demo model and on model fixtures
# whose transformers logits are in tests/fixtures/models/*/expected.safetensors.
#
#   tools/make_gguf_fixtures.sh [--demo-f16]   writes tests/fixtures/gguf/*.gguf
#     --demo-f16   also demo_f16.gguf (2.9 MB, not committed; tests/gguf.rs checks it
#                  when it is there)
#
# Environment:
#   MAMBA_GPU_LLAMA_DIR  cache for the sdist and its unpacked tree (default
#                        $HOME/.cache/mamba-gpu-llama, shared with tools/llama_cpp_peer.sh)
#   PYTHON               a Python with torch, numpy, sentencepiece and transformers 4.x
#                        (default /opt/pyref/bin/python if present, else python3; see
#                        tools/requirements.txt)
#
# The converter runs unmodified except for two things, done by tools/gguf_convert.py
# and described in tests/fixtures/gguf/README.md: the demo model's own tokenizer is not
# in the converter's table of known pre-tokenizers, and the tiny fixtures, which have no
# tokenizer files, get no vocabulary instead of llama.cpp's GPT-NeoX one.
set -euo pipefail

die() {
    echo "make_gguf_fixtures.sh: error: $*" >&2
    exit 1
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_COMMIT=0c1e57098
CACHE=${MAMBA_GPU_LLAMA_DIR:-$HOME/.cache/mamba-gpu-llama}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x /opt/pyref/bin/python ]]; then PYTHON=/opt/pyref/bin/python; else PYTHON=python3; fi
fi
SRC=$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp
OUT=$ROOT/tests/fixtures/gguf
DEMO_F16=0
for a in "$@"; do
    case $a in
        --demo-f16) DEMO_F16=1 ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) die "unknown argument $a (see --help)" ;;
    esac
done

# ------------------------------------------------------------------ the converter
tgz=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
mkdir -p "$CACHE/sdist"
if [[ ! -f $tgz ]]; then
    # --no-binary only for this package: its build backend may come as a wheel
    # (--no-binary :all: would build cmake from source to read the metadata).
    "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -d "$CACHE/sdist" >&2 ||
        die "pip download of llama-cpp-python==$VERSION failed"
fi
echo "$SDIST_SHA256  $tgz" | sha256sum -c --quiet - ||
    die "$tgz does not have the expected sha256 $SDIST_SHA256"
if [[ ! -f $SRC/convert_hf_to_gguf.py ]]; then
    tar -xzf "$tgz" -C "$CACHE"
fi
grep -q "llama.cpp@$LLAMA_COMMIT" "$CACHE/llama_cpp_python-$VERSION/CHANGELOG.md" ||
    die "the sdist's CHANGELOG does not name llama.cpp@$LLAMA_COMMIT"
"$PYTHON" -c "import torch, numpy, transformers, sentencepiece" ||
    die "$PYTHON lacks torch/numpy/transformers/sentencepiece (tools/requirements.txt)"

# ------------------------------------------------------------------ conversions
mkdir -p "$OUT"
convert() { # SRC_DIR OUTTYPE NAME [--no-vocab]
    local dir=$1 outtype=$2 name=$3
    shift 3
    echo "== $name ($outtype)" >&2
    "$PYTHON" "$ROOT/tools/gguf_convert.py" --llama-cpp "$SRC" "$@" -- \
        "$dir" --outtype "$outtype" --outfile "$OUT/$name.gguf" >&2 ||
        die "conversion of $dir to $outtype failed"
}
M=$ROOT/tests/fixtures/models
convert "$ROOT/examples/demo_model" q8_0 demo_q8_0
if [[ $DEMO_F16 == 1 ]]; then convert "$ROOT/examples/demo_model" f16 demo_f16; fi
# (tiny_tied cannot be converted: its `time_step_rank: "auto"` is written as an integer
# by the converter, which fails; f16_rank8 is the tied Mamba-1 case.)
convert "$M/f16_rank8" f32 f16_rank8_f32 --no-vocab
convert "$M/f16_rank8" q8_0 f16_rank8_q8_0 --no-vocab
convert "$M/falcon_tiny_tied" f32 falcon_tiny_tied_f32 --no-vocab
convert "$M/falcon_tiny_tied" q8_0 falcon_tiny_tied_q8_0 --no-vocab
convert "$M/untied_bias_v389" f16 untied_bias_v389_f16 --no-vocab
convert "$M/mamba2_g2_untied_bias" f32 mamba2_g2_untied_bias_f32 --no-vocab
ls -l "$OUT"/*.gguf >&2
