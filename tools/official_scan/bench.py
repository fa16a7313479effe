#!/usr/bin/env python3
"""Times the official mamba_ssm selective-scan forward (`selective_scan_cuda.fwd`, and the
`selective_scan_fn` wrapper around it) on the GPU, in the shapes of our bench
(examples/bench.rs), after checking its output against a float64 reference.

    python3 tools/official_scan/bench.py --lib /tmp/official_scan_build/lib \\
        --src /tmp/official_scan_build/src/mamba_ssm-2.3.2.post1 --out official_scan.md
    python3 tools/official_scan/bench.py --dry-run --src DIR   # CPU only: see below

The module is the one tools/official_scan/setup.py builds (forward-only, same sources and
flags as the official wheel); run.sh builds it and calls this.

Inputs are as mamba_ssm uses them and as our bench times them: channel-major u, delta, z
(batch, dim, L); A (dim, N) float32; input-dependent B, C of shape (batch, 1, N, L) (one
group); D and delta_bias (dim) float32; delta_softplus=True. Values are drawn like
mamba_ssm's tests and our fixtures (tools/make_scan_fixtures.py): u, B, C, D, z ~ N(0,1),
delta ~ 0.5·U(0,1), A ~ −0.5·U(0,1), delta_bias ~ 0.5·U(0,1); never zeros. dtype `fp32`
is float32 everywhere; `bf16` is bfloat16 u, delta, z, B, C (and out) with float32 A, D,
delta_bias, which the official kernel supports (our bench has f32 I/O only).

Correctness first: for every timed shape the same kernel instantiation (same L and N,
hence the same threads/items/even-length/chunk count; batch ≤ 2 and dim ≤ --check-dim)
is compared with a float64 recurrence computed by PyTorch from the very same (rounded)
inputs: `out` (before the z gate), `out_z` and the last state (`x[:, :, -1, 1::2]`, as
selective_scan_fn reads it). That reference is itself compared with mamba_ssm's own
`selective_scan_ref` (cut out of the sdist, run in float64 as tools/make_scan_fixtures.py
does) when einops is importable. A failed check is printed in the table, and the exit
code is 1.

Timing: CUDA events; `--warmup` calls, then `--iters` (≥ 20) samples, each a burst of
`--burst` back-to-back calls (so launch overhead overlaps the previous kernel), median
per call. The input sets rotate (enough sets that one round covers ≥ 3× the L2 cache,
as far as memory allows) so that inputs are not served from L2; the same-inputs column
repeats one set, as examples/bench.rs does. "single" is one call between two events
(launch latency included; our bench's timing additionally includes a final-state
download and a host wait).

Bytes: "useful" is our bench's floor, each tensor our scan needs read or written once:
`isz·batch·L·(4·dim + 2·G·N) + 4·(dim·N + 2·dim)` (isz = 4 for fp32, 2 for bf16; u,
delta, z, B, C read, out written; A, D, delta_bias; G = 1). "actual" is what this
kernel really moves at least once: it also writes `out` before the gate (the backward
needs it) besides `out_z`, and the chunk states `x`, float32 (batch, dim, ceil(L/2048),
2N): `useful + isz·batch·dim·L + 8·batch·dim·n_chunks·N`. GB/s = bytes / time;
× floor = time / (useful bytes / --peak-gbs), as in our bench.

--dry-run needs no GPU and no built module: it checks the float64 reference against
selective_scan_ref on small shapes, runs the sdist's SelectiveScanFn / selective_scan_fn
over a stand-in `fwd` built on that reference (so the wrapper's calling convention and
the last-state slicing are exercised), and prints the byte counts of the table.
"""

import argparse
import ast
import glob
import math
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

F64 = torch.float64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_SHAPES = "1x768x2048x16,1x1536x2048x16,4x1536x2048x16,1x2560x8192x16"
INTERFACE = "mamba_ssm/ops/selective_scan_interface.py"
CHUNK = 2048  # selective_scan.cpp: n_chunks = ceil(seqlen / 2048)
# Relative L2 error bounds against the float64 reference. fp32: the kernel computes in
# float32 with --use_fast_math (exp2f, log1pf); bf16: outputs are rounded to bfloat16
# (half an ulp is 2^-9 ≈ 2e-3 relative), the state stays float32.
TOL = {"fp32": {"out": 1e-4, "out_z": 1e-4, "last_state": 1e-4},
       "bf16": {"out": 1e-2, "out_z": 1e-2, "last_state": 1e-3}}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------
# Shapes, inputs, bytes.


def parse_shapes(s):
    shapes = []
    for part in s.split(","):
        v = [int(x) for x in part.strip().split("x")]
        if len(v) != 4 or min(v) < 1:
            sys.exit(f"bad shape {part!r} (want BATCHxDIMxLxN)")
        shapes.append(tuple(v))
    return shapes


def n_chunks(L):
    return (L + CHUNK - 1) // CHUNK


def bytes_moved(shape, dtype, groups=1):
    """(useful, actual) bytes; see the module docs."""
    b, d, L, n = shape
    isz = 2 if dtype == "bf16" else 4
    useful = isz * b * L * (4 * d + 2 * groups * n) + 4 * (d * n + 2 * d)
    actual = useful + isz * b * d * L + 8 * b * d * n_chunks(L) * n
    return useful, actual


def make_inputs(shape, dtype, device, seed, groups=1):
    """The official layout: u, delta, z (b, d, L); A (d, N); B, C (b, G, N, L); D,
    delta_bias (d). Drawn in float32, then u/delta/z/B/C cast to the I/O dtype."""
    b, d, L, n = shape
    g = torch.Generator(device=device).manual_seed(seed)
    f32 = dict(device=device, dtype=torch.float32, generator=g)
    io = DTYPES[dtype]
    t = {
        "u": torch.randn(b, d, L, **f32).to(io),
        "delta": (0.5 * torch.rand(b, d, L, **f32)).to(io),
        "A": -0.5 * torch.rand(d, n, **f32),
        "B": torch.randn(b, groups, n, L, **f32).to(io),
        "C": torch.randn(b, groups, n, L, **f32).to(io),
        "D": torch.randn(d, **f32),
        "z": torch.randn(b, d, L, **f32).to(io),
        "delta_bias": 0.5 * torch.rand(d, **f32),
    }
    return t


def fwd_args(t, softplus=True):
    return (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
            softplus)


# -------------------------------------------------------------------------------------
# The float64 reference, and mamba_ssm's own code cut out of the sdist.


def ref_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The selective scan in float64, step by step (independent of mamba_ssm's code).
    Returns (out before the z gate, out after it (None without z), last state)."""
    u, delta, A, B, C = (x.to(F64) for x in (u, delta, A, B, C))
    b, d, L = u.shape
    n = A.shape[1]
    g = B.shape[1]
    dt = delta if delta_bias is None else delta + delta_bias.to(F64)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)  # threshold 20, as the kernel's `x <= 20 ? log1p(exp(x)) : x`
    # channel c uses group c // (d / g)
    Bd = B.repeat_interleave(d // g, dim=1)  # (b, d, N, L)
    Cd = C.repeat_interleave(d // g, dim=1)
    dA = torch.exp(dt[..., None] * A[:, None, :])  # (b, d, L, N)
    du = dt * u  # (b, d, L)
    h = torch.zeros(b, d, n, dtype=F64, device=u.device)
    ys = torch.empty(b, d, L, dtype=F64, device=u.device)
    for t in range(L):
        h = dA[:, :, t] * h + du[:, :, t, None] * Bd[..., t]
        ys[:, :, t] = (h * Cd[..., t]).sum(-1)
    out = ys if D is None else ys + u * D.to(F64)[:, None]
    out_z = None if z is None else out * F.silu(z.to(F64))
    return out, out_z, h


def read_interface(src: Path) -> str:
    path = src / INTERFACE
    if not path.is_file():
        sys.exit(f"{path} not found (--src must be the unpacked mamba_ssm sdist)")
    return path.read_text()


def node_source(text, name, kind):
    for node in ast.parse(text).body:
        if isinstance(node, kind) and node.name == name:
            if node.decorator_list:
                sys.exit(f"{name} has decorators in this mamba_ssm version; check the extraction")
            return ast.get_source_segment(text, node)
    sys.exit(f"{name} not found in {INTERFACE}")


def einops_or_none():
    try:
        from einops import rearrange, repeat
        return rearrange, repeat
    except ImportError:
        return None, None


def load_official_wrapper(src: Path, module):
    """mamba_ssm's `SelectiveScanFn` and `selective_scan_fn`, exec'd over `module` as
    `selective_scan_cuda` (the sdist's file itself imports triton kernels and more)."""
    text = read_interface(src)
    rearrange, repeat = einops_or_none()
    ns = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat,
          "selective_scan_cuda": module}
    for name, kind in [("SelectiveScanFn", ast.ClassDef), ("selective_scan_fn", ast.FunctionDef)]:
        exec(compile(node_source(text, name, kind), f"{INTERFACE}:{name}", "exec"), ns)
    return ns["selective_scan_fn"]


def load_official_ref64(src: Path):
    """mamba_ssm's `selective_scan_ref` with its `.float()` casts made `.double()` (as
    tools/make_scan_fixtures.py does); None without einops."""
    rearrange, repeat = einops_or_none()
    if rearrange is None:
        return None
    text = node_source(read_interface(src), "selective_scan_ref", ast.FunctionDef)
    ns = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
    exec(compile(text.replace(".float()", ".double()"), "selective_scan_ref[f64]", "exec"), ns)
    return ns["selective_scan_ref"]


def rel_l2(a, b):
    a, b = a.to(F64), b.to(F64)
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def check_reference(src: Path, device):
    """Our float64 recurrence against mamba_ssm's selective_scan_ref (float64)."""
    ref64 = load_official_ref64(src)
    if ref64 is None:
        return "reference not cross-checked (no einops)"
    worst = 0.0
    for shape, groups in [((2, 8, 37, 4), 1), ((2, 6, 300, 16), 3), ((1, 4, 2100, 16), 2)]:
        t = make_inputs(shape, "fp32", device, seed=7, groups=groups)
        t64 = {k: v.to(F64) for k, v in t.items()}
        out, out_z, last = ref_scan(**t64, delta_softplus=True)
        o_ref, last_ref = ref64(t64["u"], t64["delta"], t64["A"], t64["B"], t64["C"],
                                D=t64["D"], z=t64["z"], delta_bias=t64["delta_bias"],
                                delta_softplus=True, return_last_state=True)
        o_ref_nz = ref64(t64["u"], t64["delta"], t64["A"], t64["B"], t64["C"], D=t64["D"],
                         delta_bias=t64["delta_bias"], delta_softplus=True)
        err = max(rel_l2(out_z, o_ref), rel_l2(last, last_ref), rel_l2(out, o_ref_nz))
        worst = max(worst, err)
        if not err < 1e-12:
            sys.exit(f"our float64 reference disagrees with selective_scan_ref on {shape} "
                     f"G={groups}: rel L2 {err:.3e}")
    return f"float64 reference = mamba_ssm selective_scan_ref (float64) within {worst:.1e}"


# -------------------------------------------------------------------------------------
# Correctness of the built kernel.


def check_kernel(mod, scan_fn, shape, dtype, check_dim, device):
    """Runs fwd and selective_scan_fn on a reduced shape with the same kernel
    instantiation; returns (ok, text)."""
    b, d, L, n = shape
    cshape = (min(b, 2), min(d, check_dim), L, n)
    t = make_inputs(cshape, dtype, device, seed=11)
    out, x, *rest = mod.fwd(*fwd_args(t))
    if len(rest) != 1:
        return False, f"fwd returned {2 + len(rest)} tensors, want 3 (out, x, out_z)"
    out_z = rest[0]
    want_x = (cshape[0], cshape[1], n_chunks(L), 2 * n)
    if tuple(x.shape) != want_x or x.dtype != torch.float32:
        return False, f"x is {tuple(x.shape)} {x.dtype}, want {want_x} float32"
    if out.dtype != DTYPES[dtype] or out_z.dtype != DTYPES[dtype]:
        return False, f"out/out_z dtype {out.dtype}/{out_z.dtype}"
    r_out, r_out_z, r_last = ref_scan(**t, delta_softplus=True)
    errs = {"out": rel_l2(out, r_out), "out_z": rel_l2(out_z, r_out_z),
            "last_state": rel_l2(x[:, :, -1, 1::2], r_last)}
    # the wrapper gives the same kernel's out_z and last state
    fn_out, fn_last = scan_fn(*fwd_args(t)[:5], D=t["D"], z=t["z"],
                              delta_bias=t["delta_bias"], delta_softplus=True,
                              return_last_state=True)
    wrap_ok = torch.equal(fn_out, out_z) and torch.equal(fn_last, x[:, :, -1, 1::2])
    finite = bool(torch.isfinite(out_z).all()) and bool(torch.isfinite(x).all())
    ok = finite and wrap_ok and all(errs[k] <= TOL[dtype][k] for k in errs)
    text = (f"check {'x'.join(map(str, cshape))} {dtype}: rel L2 " +
            ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) +
            f" (bounds {TOL[dtype]['out_z']:.0e}/{TOL[dtype]['last_state']:.0e})" +
            ("" if wrap_ok else "; selective_scan_fn differs from fwd") +
            ("" if finite else "; NON-FINITE values"))
    return ok, text


# -------------------------------------------------------------------------------------
# Timing.


def time_calls(calls, warmup, iters, burst):
    """Median and minimum milliseconds per call: `iters` samples, each a burst of
    `burst` calls between two CUDA events, cycling through `calls` (after a warm-up)."""
    k = 0
    # at least `warmup` calls and 0.2 s of them, so that clocks have ramped up
    t0 = time.perf_counter()
    while k < warmup or time.perf_counter() - t0 < 0.2:
        calls[k % len(calls)]()
        k += 1
        if k % 8 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(burst):
            calls[k % len(calls)]()
            k += 1
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / burst)
    return statistics.median(samples), min(samples)


def rotation_sets(shape, dtype, l2_bytes, free_bytes):
    """How many input sets to cycle through: one round ≥ 3× L2, within a quarter of the
    free memory, at most 16."""
    _, actual = bytes_moved(shape, dtype)
    want = max(1, math.ceil(3 * l2_bytes / actual))
    fit = max(1, int(0.25 * free_bytes // (2 * actual)))  # inputs + outputs, generously
    return min(want, fit, 16)


def bench_row(mod, scan_fn, shape, dtype, a, l2_bytes, device):
    free, _ = torch.cuda.mem_get_info()
    k = rotation_sets(shape, dtype, l2_bytes, free)
    sets = [make_inputs(shape, dtype, device, seed=100 + i) for i in range(k)]
    fwd_calls = [lambda t=t: mod.fwd(*fwd_args(t)) for t in sets]
    fn_calls = [lambda t=t: scan_fn(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"],
                                    z=t["z"], delta_bias=t["delta_bias"],
                                    delta_softplus=True) for t in sets]
    with torch.no_grad():
        fwd_ms, fwd_min = time_calls(fwd_calls, a.warmup, a.iters, a.burst)
        same_ms, _ = time_calls(fwd_calls[:1], a.warmup, a.iters, a.burst)
        single_ms, _ = time_calls(fwd_calls, a.warmup, a.iters, 1)
        fn_ms, _ = time_calls(fn_calls, a.warmup, a.iters, a.burst)
    del sets, fwd_calls, fn_calls
    torch.cuda.empty_cache()
    return dict(fwd_ms=fwd_ms, fwd_min=fwd_min, same_ms=same_ms, single_ms=single_ms,
                fn_ms=fn_ms, sets=k)


# -------------------------------------------------------------------------------------
# Report.

HEADER = ("| batch×dim×L×N | dtype | fwd ms | min ms | same-inputs ms | single-call ms "
          "| selective_scan_fn ms | useful MB | actual MB | useful GB/s | actual GB/s "
          "| × floor | check |")
RULE = "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"


def row_text(shape, dtype, r, peak, check):
    useful, actual = bytes_moved(shape, dtype)
    name = "×".join(map(str, shape))
    if r is None:
        times = ["-"] * 5
        gbs = ["-", "-"]
        ratio = "-"
    else:
        s = r["fwd_ms"] / 1e3
        times = [f"{r['fwd_ms']:.4f}", f"{r['fwd_min']:.4f}", f"{r['same_ms']:.4f}",
                 f"{r['single_ms']:.4f}", f"{r['fn_ms']:.4f}"]
        gbs = [f"{useful / s / 1e9:.0f}", f"{actual / s / 1e9:.0f}"]
        ratio = f"{s / (useful / (peak * 1e9)):.2f}" if peak else "-"
    return (f"| {name} | {dtype} | " + " | ".join(times) +
            f" | {useful / 1e6:.1f} | {actual / 1e6:.1f} | " + " | ".join(gbs) +
            f" | {ratio} | {check} |")


def describe_env(a, mod_file):
    lines = [f"- torch {torch.__version__}, built with CUDA {torch.version.cuda}; "
             f"python {sys.version.split()[0]}"]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        l2 = getattr(p, "L2_cache_size", 0)
        lines.append(f"- device: {torch.cuda.get_device_name()} (sm_{p.major}{p.minor}, "
                     f"{p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, "
                     f"L2 {l2 / 2**20:.0f} MiB)")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,"
                              "clocks.max.mem", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        lines.append(f"- nvidia-smi: {smi}")
    except Exception as e:  # noqa: BLE001 - informational only
        lines.append(f"- nvidia-smi: unavailable ({e})")
    try:
        nv = subprocess.run(["nvcc", "--version"], capture_output=True, text=True,
                            timeout=20).stdout.strip().splitlines()[-1]
        lines.append(f"- nvcc: {nv}")
    except Exception:  # noqa: BLE001
        pass
    pkg = Path(a.src) / "PKG-INFO"
    ver = next((l.split(":", 1)[1].strip() for l in pkg.read_text().splitlines()
                if l.startswith("Version:")), "?") if pkg.is_file() else "?"
    lines.append(f"- mamba_ssm sdist {ver} ({a.src}); module {mod_file}")
    lines.append(f"- {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; "
                 f"commit {commit()}; command: {' '.join(sys.argv)}")
    return lines


def commit():
    here = Path(__file__).resolve().parent
    c = here.parent.parent / ".gpu" / "COMMIT"
    if c.is_file():
        return c.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except Exception:  # noqa: BLE001
        return "?"


def import_module(lib):
    """`selective_scan_cuda` from the folder setup.py built it into, not from anywhere
    else on sys.path."""
    found = glob.glob(os.path.join(lib, "selective_scan_cuda*.so"))
    if len(found) != 1:
        sys.exit(f"expected one selective_scan_cuda*.so in {lib}, found {found}")
    sys.path.insert(0, lib)
    import selective_scan_cuda  # noqa: E402 - after torch, which loads libc10 etc.
    if os.path.realpath(selective_scan_cuda.__file__) != os.path.realpath(found[0]):
        sys.exit(f"imported {selective_scan_cuda.__file__}, not {found[0]}")
    return selective_scan_cuda


def dry_run(a, shapes, dtypes):
    """CPU: the reference against selective_scan_ref, the official wrapper over a
    stand-in fwd, and the byte counts."""
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    src = Path(a.src)
    print(f"- {check_reference(src, 'cpu')}")

    def fake_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        # the official calling convention: returns out, x (b, d, n_chunks, 2N), out_z
        out, out_z, last = ref_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        b, d, L = u.shape
        x = torch.zeros(b, d, n_chunks(L), 2 * A.shape[1], dtype=torch.float32)
        x[:, :, -1, 1::2] = last.float()
        res = [out.to(u.dtype), x]
        if z is not None:
            res.append(out_z.to(u.dtype))
        return res

    scan_fn = load_official_wrapper(src, types.SimpleNamespace(fwd=fake_fwd))
    t = make_inputs((2, 4, 2100, 8), "fp32", "cpu", seed=3)
    o, last = scan_fn(*fwd_args(t)[:5], D=t["D"], z=t["z"], delta_bias=t["delta_bias"],
                      delta_softplus=True, return_last_state=True)
    r_out, r_out_z, r_last = ref_scan(**t, delta_softplus=True)
    err = max(rel_l2(o, r_out_z), rel_l2(last, r_last))
    assert err < 1e-6, err
    print(f"- selective_scan_fn (sdist) over a stand-in fwd: out_z and last state as "
          f"expected (rel L2 {err:.1e})")
    print()
    print(HEADER)
    print(RULE)
    for shape in shapes:
        for dt in dtypes:
            print(row_text(shape, dt, None, a.peak_gbs, "dry run"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default="/tmp/official_scan_build/lib",
                    help="folder holding the built selective_scan_cuda*.so")
    ap.add_argument("--src", required=True, help="the unpacked mamba_ssm sdist")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="BATCHxDIMxLxN, comma separated")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--iters", type=int, default=50, help="timed samples (≥ 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--burst", type=int, default=10, help="calls per timed sample")
    ap.add_argument("--peak-gbs", type=float,
                    default=float(os.environ.get("MAMBA_GPU_PEAK_GBS", 3350)),
                    help="HBM peak for the × floor column (H100 SXM: 3350)")
    ap.add_argument("--check-dim", type=int, default=64,
                    help="dim of the correctness checks (L and N as timed)")
    ap.add_argument("--out", default=None, help="also write the report (markdown) here")
    ap.add_argument("--dry-run", action="store_true", help="CPU only; see the module docs")
    a = ap.parse_args()
    if a.iters < 20:
        sys.exit("--iters must be at least 20")
    shapes = parse_shapes(a.shapes)
    dtypes = [d.strip() for d in a.dtypes.split(",")]
    for d in dtypes:
        if d not in DTYPES:
            sys.exit(f"unknown dtype {d} (fp32, bf16)")
    if a.dry_run:
        dry_run(a, shapes, dtypes)
        return 0

    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch (use --dry-run for the CPU checks)")
    mod = import_module(a.lib)
    scan_fn = load_official_wrapper(Path(a.src), mod)
    device = "cuda"
    lines = ["# Official mamba_ssm selective scan (forward), timed", ""]
    lines += describe_env(a, mod.__file__)
    lines.append(f"- {check_reference(Path(a.src), device)}")
    lines.append(f"- timing: CUDA events, {a.warmup} warm-up calls, median of {a.iters} "
                 f"samples of {a.burst} back-to-back calls (single-call: 1); inputs "
                 f"rotated over enough sets to exceed 3× L2; peak {a.peak_gbs} GB/s")
    lines.append("- bytes: useful = isz·b·L·(4·dim + 2·N) + 4·(dim·N + 2·dim) (our bench's "
                 "floor); actual = useful + isz·b·dim·L (out before the gate) + "
                 "8·b·dim·ceil(L/2048)·N (chunk states x)")
    for l in lines:
        print(l, flush=True)
    p = torch.cuda.get_device_properties(0)
    l2 = getattr(p, "L2_cache_size", 0) or 50 * 2**20
    rows = [HEADER, RULE]
    failed = 0
    notes = []
    for shape in shapes:
        for dt in dtypes:
            name = f"{'x'.join(map(str, shape))} {dt}"
            try:
                ok, text = check_kernel(mod, scan_fn, shape, dt, a.check_dim, device)
                log(("ok: " if ok else "CHECK FAILED: ") + text)
                notes.append(("" if ok else "**FAILED** ") + text)
                r = bench_row(mod, scan_fn, shape, dt, a, l2, device)
                log(f"{name}: fwd {r['fwd_ms']:.4f} ms (min {r['fwd_min']:.4f}), same inputs "
                    f"{r['same_ms']:.4f}, single {r['single_ms']:.4f}, selective_scan_fn "
                    f"{r['fn_ms']:.4f}; {r['sets']} input set(s)")
                rows.append(row_text(shape, dt, r, a.peak_gbs, "ok" if ok else "**FAILED**"))
                failed += not ok
            except Exception as e:  # a row's failure is reported, the others still run
                failed += 1
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log(f"ERROR in {name}: {msg}")
                import traceback
                traceback.print_exc()
                rows.append(row_text(shape, dt, None, a.peak_gbs, f"**ERROR** {msg[:120]}"))
                torch.cuda.empty_cache()
    report = lines + ["", *rows, "", "Checks (float64 reference, same L and N as timed):", ""]
    report += [f"- {n}" for n in notes]
    if failed:
        report += ["", f"**{failed} row(s) failed; see above.**"]
    text = "\n".join(report) + "\n"
    print()
    print("\n".join(rows + [""] + [f"- {n}" for n in notes]), flush=True)
    if a.out:
        Path(a.out).write_text(text)
        log(f"wrote {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
