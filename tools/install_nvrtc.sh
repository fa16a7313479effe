#!/usr/bin/env bash
# Installs NVIDIA's NVRTC (the run-time CUDA C++ compiler) from PyPI into a private
# virtual environment, so that `tests/nvrtc_compile.rs` can compile every kernels/*.cu
# on a machine with no GPU, no driver and no CUDA toolkit.
#
# Usage:   eval "$(tools/install_nvrtc.sh)"      # exports LD_LIBRARY_PATH
#          tools/install_nvrtc.sh [VENV_DIR]     # prints the export line on stdout
#
# The venv defaults to $NVRTC_VENV, else ${TMPDIR:-/tmp}/mamba-gpu-nvrtc (outside the tree).
# Progress goes to stderr; the only line on stdout is the `export LD_LIBRARY_PATH=...`.
#
# Why this package: cudarc (feature `cuda-13000`, `dynamic-loading`) dlopen()s the names
# libnvrtc.so, libnvrtc.so.13, libnvrtc.so.12, ... through the normal search path, and
# NVRTC itself dlopen()s libnvrtc-builtins.so.13.X from the same folder. The PyPI wheel
# `nvidia-cuda-nvrtc` 13.x ships exactly those two files in nvidia/cu13/lib/. We pin
# 13.0 (the toolkit of the GPU machine: CUDA 13.0, driver 580), so the compile check
# uses the same front end the kernels meet there. Override with NVRTC_PIN.
set -euo pipefail

venv="${1:-${NVRTC_VENV:-${TMPDIR:-/tmp}/mamba-gpu-nvrtc}}"
pin="${NVRTC_PIN:-nvidia-cuda-nvrtc==13.0.88}"
python="${PYTHON:-python3}"

find_lib() {
    find "$venv" -name 'libnvrtc.so.13' -path '*nvidia/cu13/lib/*' 2>/dev/null | head -n1
}

lib="$(find_lib || true)"
if [[ -z "$lib" ]]; then
    echo "install_nvrtc: installing $pin into $venv" >&2
    if [[ ! -x "$venv/bin/pip" ]]; then
        "$python" -m venv "$venv" >&2
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$pin" >&2
    lib="$(find_lib || true)"
fi
if [[ -z "$lib" ]]; then
    echo "install_nvrtc: libnvrtc.so.13 not found under $venv after installing $pin" >&2
    exit 1
fi
libdir="$(dirname "$lib")"
if ! ls "$libdir"/libnvrtc-builtins.so.13* >/dev/null 2>&1; then
    echo "install_nvrtc: libnvrtc-builtins.so.13.* missing next to $lib" >&2
    exit 1
fi
echo "install_nvrtc: NVRTC at $libdir" >&2
echo "export LD_LIBRARY_PATH=\"$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
