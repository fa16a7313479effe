#!/usr/bin/env python3
"""Q8_0 weight cases for ops::matmul_q8, from llama.cpp's own quantizer.

Reference: `gguf.quants.Q8_0` of the `gguf` package on PyPI (llama.cpp's gguf-py, "bit-exact
same results as reference implementation in ggml-quants.c"): blocks of 32 weights along a
row, one f16 scale `d = max|w| / 127` each and `q = roundf(w / d)` as int8. Each case
writes tests/fixtures/q8/<name>.safetensors with:
  w   (n, k) f32       the weights, random (some rows scaled, one block all zero)
  q   (n, k) int8      gguf's quants
  d   (n, k/32) f16    gguf's scales
  x   (m, k) f32       activations
  bias (n) f32         (in cases with a bias)
  out (m, n) f32       x · dequant(q, d)ᵀ + bias, computed in float64
The Rust side checks that its quantizer gives exactly these q and d, and that matmul_q8
on every backend gives `out` (relative L2 <= 1e-5).

Usage: /opt/pyref/bin/python tools/make_q8_fixtures.py [--out tests/fixtures/q8]
(needs numpy, safetensors and `pip install gguf`).
"""
import argparse
import os

import numpy as np
from gguf.quants import quantize, dequantize
from gguf.constants import GGMLQuantizationType
from safetensors.numpy import save_file

CASES = [
    # name, m, n, k, bias
    ("q8_m1_n7_k32", 1, 7, 32, False),
    ("q8_m1_n33_k256_bias", 1, 33, 256, True),
    ("q8_m3_n64_k96", 3, 64, 96, False),
    ("q8_m8_n17_k768_bias", 8, 17, 768, True),
    ("q8_m9_n40_k160", 9, 40, 160, True),
    ("q8_m33_n65_k64", 33, 65, 64, False),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/q8")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(8)
    qt = GGMLQuantizationType.Q8_0
    for name, m, n, k, has_bias in CASES:
        w = rng.standard_normal((n, k)).astype(np.float32)
        w *= rng.uniform(0.01, 3.0, size=(n, 1)).astype(np.float32)
        w[0, :32] = 0.0  # an all-zero block: d = 0, q = 0
        raw = quantize(w, qt).reshape(n, k // 32, 34)
        d = raw[:, :, :2].copy().view(np.float16).reshape(n, k // 32)
        q = raw[:, :, 2:].copy().view(np.int8).reshape(n, k)
        deq = dequantize(quantize(w, qt), qt).astype(np.float64)
        assert np.array_equal(deq, q.astype(np.float64) * np.repeat(d.astype(np.float64), 32, axis=1))
        x = rng.standard_normal((m, k)).astype(np.float32)
        out = x.astype(np.float64) @ deq.T
        t = {"w": w, "q": q, "d": d, "x": x}
        if has_bias:
            bias = rng.standard_normal(n).astype(np.float32)
            out += bias.astype(np.float64)
            t["bias"] = bias
        t["out"] = out.astype(np.float32)
        path = os.path.join(args.out, f"{name}.safetensors")
        save_file(t, path, metadata={"m": str(m), "n": str(n), "k": str(k), "source": "gguf.quants.Q8_0"})
        print(f"{path}: m {m} n {n} k {k} bias {has_bias}")


if __name__ == "__main__":
    main()
