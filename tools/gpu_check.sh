#!/usr/bin/env bash
# One-command GPU check for a machine with an NVIDIA GPU and no Rust toolchain.
#
#   tools/gpu_check.sh build   # here (Rust, network): prebuilt binaries into .gpu/,
#                              # Vulkan loader .debs into .gl/
#   tools/gpu_check.sh run     # there (GPU, no Rust): every CUDA and wgpu test with
#                              # skips turned into failures, then the benches; one
#                              # summary table; logs under $OUT (if set) or .gpu/logs
#
# Take the repository (with .gpu/ and .gl/, both git-ignored) to the GPU machine and run
# `tools/gpu_check.sh run` from anywhere inside it.
#
# The official kernel as the anchor: `build` also puts mamba_ssm's PyPI sdist into
# .gpu/official/ (from $MAMBA_SSM_SDIST, /tmp/mssm/, or `pip download`); `run` starts
# tools/official_scan/run.sh --background (a forward-only build of it, on the GPU
# machine's nvcc and torch) before our tests, and runs tools/official_scan/run.sh (wait
# for the build, check, time) after our benches; its table ends the summary. If that step
# says "still building", run `tools/official_scan/run.sh` within 30 s. MAMBA_SKIP_OFFICIAL=1
# skips all of it.
#
# `build` compiles once with the default features plus `cuda` (CUDA and wgpu in the same
# binaries; a --no-default-features build does not compile the crate today), release,
# stripped to keep .gpu/ small: the GPU test binaries (cuda_ops, nvrtc_compile,
# wgpu_ops, shaders_naga, model_cuda, model_wgpu where present, and the crate's unit
# tests for the CUDA graph ones), the bench example
# (examples/bench.rs) and benches/cuda_scan.rs.
# The test binaries find kernels/ and tests/fixtures/ through CARGO_MANIFEST_DIR, which
# `run` sets to this tree; for code that baked in the build path with env!(), `run`
# links that path to this tree when it does not exist there.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gpu="$root/.gpu"
cmd="${1:-}"

die() { echo "gpu_check: $*" >&2; exit 2; }

# ------------------------------------------------------------------------------------
build() {
    command -v cargo >/dev/null || die "build needs cargo"
    command -v jq >/dev/null || die "build needs jq"
    cd "$root" || die "no repository root"
    rm -rf "$gpu"
    mkdir -p "$gpu/tests" "$gpu/bin"
    export CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=0

    # name <tab> executable, for every test / bench / example target cargo built
    collect() {
        jq -r 'select(.reason == "compiler-artifact" and .executable != null)
               | [.target.name, (.target.kind | join(",")), .executable] | @tsv'
    }
    copy_set() {   # $1 = label, rest = cargo args
        local label="$1"; shift
        echo "== building $label: cargo $*" >&2
        cargo test --release --no-run --message-format=json "$@" 2>"$gpu/build-$label.log" \
            | collect > "$gpu/.list-$label" || { cat "$gpu/build-$label.log" >&2; die "test build ($label) failed"; }
        # Examples and benches are optional: a failure is reported, the tests still go.
        cargo build --release --examples --benches --message-format=json "$@" 2>>"$gpu/build-$label.log" \
            | collect >> "$gpu/.list-$label" \
            || echo "gpu_check: example/bench build ($label) failed, see .gpu/build-$label.log" >&2
        while IFS=$'\t' read -r name kind exe; do
            case "$kind" in
                test) dest="$gpu/tests/$label-$name" ;;
                # The crate's unit tests: the CUDA graph ones (src/cuda/graph.rs) need a GPU.
                lib) dest="$gpu/tests/$label-lib-$name" ;;
                *) dest="$gpu/bin/$label-$name" ;;
            esac
            cp "$exe" "$dest"
        done < "$gpu/.list-$label"
        rm -f "$gpu/.list-$label"
    }
    copy_set gpu --features cuda
    # Only the tests that exercise a GPU go along (the CPU ones ran here).
    find "$gpu/tests" -type f ! -name 'gpu-cuda_ops' ! -name 'gpu-nvrtc_compile' \
        ! -name 'gpu-wgpu_ops' ! -name 'gpu-shaders_naga' ! -name 'gpu-model_cuda' \
        ! -name 'gpu-model_wgpu' ! -name 'gpu-lib-mamba_gpu' ! -name 'gpu-cuda_scan_half' \
        ! -name 'gpu-wgpu_scan_half' -delete
    find "$gpu/bin" -type f ! -name 'gpu-cuda_scan' ! -name 'gpu-bench' -delete
    echo "$(git rev-parse HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '-dirty')" > "$gpu/COMMIT"
    echo "$root" > "$gpu/BUILD_ROOT"
    official_sdist || echo "gpu_check: no mamba_ssm sdist in .gpu/official/; the official-kernel step will fail there" >&2

    # The Vulkan loader and GL/EGL libraries the GPU machine lacks (device.md).
    if command -v apt-get >/dev/null; then
        mkdir -p "$root/.gl"
        (cd "$root/.gl" && apt-get download libvulkan1:amd64 libegl1:amd64 libglvnd0:amd64 \
            libopengl0:amd64 libgl1:amd64 libglx0:amd64 libgles2:amd64 >/dev/null 2>&1) \
            || echo "gpu_check: apt-get download of the Vulkan loader failed; wgpu may find no adapter" >&2
    fi
    du -sh "$gpu" "$root/.gl" 2>/dev/null >&2
    ls -l "$gpu/tests" "$gpu/bin" >&2
}

# The official mamba_ssm source (~200 KB), for tools/official_scan/run.sh on the GPU
# machine, which has no registry. Its setup.py imports torch even for `pip download`
# (metadata), hence a python with torch (/opt/pyref, as tools/make_scan_fixtures.py).
official_sdist() {
    local v=2.3.2.post1 dest="$gpu/official" f py
    mkdir -p "$dest"
    for f in "${MAMBA_SSM_SDIST:-}" "/tmp/mssm/mamba_ssm-$v.tar.gz"; do
        if [[ -n "$f" && -f "$f" ]]; then cp "$f" "$dest/" && return 0; fi
    done
    for py in "${PYTHON:-}" /opt/pyref/bin/python python3; do
        [[ -n "$py" ]] && "$py" -c 'import torch' 2>/dev/null || continue
        MAMBA_SKIP_CUDA_BUILD=TRUE "$py" -m pip download --no-deps --no-build-isolation \
            --no-binary :all: "mamba-ssm==$v" -d "$dest" >&2 && break
    done
    ls "$dest"/mamba_ssm-*.tar.gz >/dev/null 2>&1
}

# ------------------------------------------------------------------------------------
run() {
    [[ -d "$gpu/tests" ]] || die "no $gpu/tests: run 'tools/gpu_check.sh build' first (on a machine with Rust)"
    local logs="${OUT:-$gpu/logs}"
    mkdir -p "$logs"
    local summary="$logs/summary.txt"
    exec > >(tee -a "$logs/gpu_check.log") 2>&1

    echo "== gpu_check run $(date -u +%FT%TZ), commit $(cat "$gpu/COMMIT" 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true

    # CUDA toolkit libraries (NVRTC, cuBLAS): prefer the toolkit matching the driver.
    for d in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "NVRTC/cuBLAS from $d: $(ls "$d"/libnvrtc.so.* 2>/dev/null | head -1)"
            break
        fi
    done
    # The Vulkan loader from .gl/ (see device.md), only where none is installed.
    if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && ls "$root"/.gl/*.deb >/dev/null 2>&1; then
        for f in "$root"/.gl/*.deb; do dpkg -x "$f" / 2>/dev/null || echo "dpkg -x $f failed (not root?)"; done
        ldconfig 2>/dev/null || true
    fi
    if [[ -z "${VK_DRIVER_FILES:-}" && -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
    # Binaries that baked the build path in with env!("CARGO_MANIFEST_DIR").
    local built_at
    built_at="$(cat "$gpu/BUILD_ROOT" 2>/dev/null)"
    if [[ -n "$built_at" && "$built_at" != "$root" && ! -e "$built_at" ]]; then
        mkdir -p "$(dirname "$built_at")" && ln -s "$root" "$built_at" \
            && echo "linked $built_at -> $root (paths baked in at build time)"
    fi

    # The official kernel compiles (CPU only, a few minutes) while our tests run.
    if [[ "${MAMBA_SKIP_OFFICIAL:-0}" != 1 ]]; then
        "$root/tools/official_scan/run.sh" --background || echo "official_scan: background build not started"
    fi

    export CARGO_MANIFEST_DIR="$root"
    export MAMBA_REQUIRE=cuda,wgpu,wgpu-subgroups,nvrtc RUST_BACKTRACE=1
    cd "$root" || die "no repository root"

    printf '%-28s %-6s %8s  %s\n' "step" "status" "seconds" "detail" > "$summary"
    local failed=0
    step() {   # $1 = name, rest = command; logs to $logs/<name>.log
        local name="$1"; shift
        local t0=$SECONDS
        echo "== $name: $*"
        "$@" > "$logs/$name.log" 2>&1
        local rc=$?
        local dt=$((SECONDS - t0))
        local detail
        detail="$(grep -E '^test result:' "$logs/$name.log" | tail -1)"
        [[ -z "$detail" ]] && detail="$(tail -1 "$logs/$name.log" | cut -c1-100)"
        local status=ok
        if [[ $rc -ne 0 ]]; then status=FAIL; failed=1; fi
        if grep -q 'SKIPPED' "$logs/$name.log"; then status=FAIL; failed=1; detail="skipped: $detail"; fi
        printf '%-28s %-6s %8s  %s\n' "$name" "$status" "$dt" "$detail" | tee -a "$summary"
    }

    for t in "$gpu"/tests/*; do
        [[ -x "$t" ]] || continue
        step "test-$(basename "$t")" "$t" --test-threads=1 --nocapture
    done
    if [[ -x "$gpu/bin/gpu-cuda_scan" ]]; then step "bench-cuda_scan" "$gpu/bin/gpu-cuda_scan" --bench; fi
    if [[ -x "$gpu/bin/gpu-bench" ]]; then
        # Decode rows at batch 1, 4 (fused) and 16 (unfused GEMM step), 130m and 2.8b.
        step "bench-example-cuda" "$gpu/bin/gpu-bench" --backend cuda --decode-batches 1,4,16
        step "bench-example-cuda-json" "$gpu/bin/gpu-bench" --backend cuda --shapes none \
            --decode-batches 1,16 --json
        # The decode step without CUDA graphs, and unfused, to compare with the lines above.
        step "bench-example-cuda-nographs" env MAMBA_CUDA_GRAPHS=0 "$gpu/bin/gpu-bench" \
            --backend cuda --shapes 1x768x2048x16 --models 130m,2.8b --decode-batches 1,16
        step "bench-example-cuda-unfused" "$gpu/bin/gpu-bench" --backend cuda --shapes none \
            --models 130m,2.8b --decode-batches 1 --unfused
        step "bench-example-wgpu" "$gpu/bin/gpu-bench" --backend wgpu --decode-batches 1,4,16
        # The wgpu decode step recorded afresh every time (no replay), and unfused.
        step "bench-example-wgpu-noreplay" "$gpu/bin/gpu-bench" --backend wgpu --shapes none \
            --models 130m --no-replay --decode-batches 1,16
        step "bench-example-wgpu-unfused" "$gpu/bin/gpu-bench" --backend wgpu --shapes none \
            --models 130m --decode-batches 1 --unfused
        # 8-bit weights (matmul_q8): decode of the 130m and 2.8b shapes on both backends.
        for be in cuda wgpu; do
            step "bench-example-$be-q8" "$gpu/bin/gpu-bench" --backend "$be" --shapes none \
                --ssd-shapes none --weights q8 --decode-batches 1,4
            # The same with int8 activations (matmul_q8_int8: __dp4a / dot4I8Packed).
            step "bench-example-$be-q8-int8" "$gpu/bin/gpu-bench" --backend "$be" --shapes none \
                --ssd-shapes none --weights q8 --q8-activations int8 --decode-batches 1,4
        done
        # Mamba-2, 130m-shaped, on both backends: its scan rows (mamba2-130m's and
        # 2.7b's heads at L = 2048) and the model, with the chunked ssd_scan (default)
        # and with the sequential one for comparison.
        for be in cuda wgpu; do
            step "bench-example-$be-mamba2" "$gpu/bin/gpu-bench" --backend "$be" --shapes none \
                --models mamba2-130m
            step "bench-example-$be-mamba2-seq" "$gpu/bin/gpu-bench" --backend "$be" \
                --shapes none --models mamba2-130m --ssd-sequential
        done
        # The wgpu scan with other workgroup sizes (the default aims at 4 channels).
        for ch in 1 2 8 16; do
            step "bench-wgpu-scan-ch$ch" "$gpu/bin/gpu-bench" --backend wgpu --models none \
                --scan-channels "$ch"
        done
    fi

    # Official mamba_ssm forward on the same GPU and shapes (waits for the build above).
    if [[ "${MAMBA_SKIP_OFFICIAL:-0}" != 1 ]]; then
        step "official-scan" "$root/tools/official_scan/run.sh"
        if [[ -f "$logs/official_scan.md" ]]; then { echo; cat "$logs/official_scan.md"; } >> "$summary"; fi
    fi

    echo
    echo "== summary ($summary)"
    cat "$summary"
    return $failed
}

case "$cmd" in
    build) build ;;
    run) run ;;
    *) die "usage: tools/gpu_check.sh build|run" ;;
esac
