#!/usr/bin/env python3
"""Scan / step fixtures from the independent reference: mamba_ssm's own
`selective_scan_ref` and `selective_state_update_ref`, run in float64.

Rerun (from the repository root; needs network access to PyPI):

    /opt/pyref/bin/pip install torch numpy einops safetensors   # once
    /opt/pyref/bin/python tools/make_scan_fixtures.py

Options: --version (mamba-ssm version, pinned by default), --out (fixture directory,
default tests/fixtures/scan), --sdist (use an already downloaded mamba_ssm-*.tar.gz
instead of fetching one). The output is deterministic (seeded torch CPU generators):
rerunning with the same version and torch gives the same inputs.

How the reference is obtained, without building or importing mamba_ssm (its imports
pull the CUDA extension and triton):

1. `pip download --no-deps --no-build-isolation --no-binary :all: mamba-ssm==VERSION`
   with MAMBA_SKIP_CUDA_BUILD=TRUE fetches the sdist (only metadata is prepared;
   nothing is compiled).
2. The source of `selective_scan_ref` (mamba_ssm/ops/selective_scan_interface.py) and
   `selective_state_update_ref` (mamba_ssm/ops/triton/selective_state_update.py) is cut
   out of the files with `ast` (the FunctionDef nodes, by name) and exec'd in a
   namespace holding torch, F = torch.nn.functional, and einops' rearrange/repeat.
3. float64: `selective_scan_ref` casts its inputs to float32 with `.float()` (u, delta,
   delta_bias, B, C; twice more in the complex-A branch, unused here). Every `.float()`
   in the extracted text is replaced with `.double()`; the script then checks that the
   transformed text has no other cast to a narrower type (`.float(`, `float32`,
   `.half(`, `bfloat16`, `float16`) and, at run time, that every output is float64.
   The other casts in it follow the inputs (`A.new_zeros`, `.to(dtype=dtype_in)` with
   dtype_in = u.dtype = float64). `selective_state_update_ref` has no hard-coded dtype:
   it computes in the dtype of its inputs (its `.to(C.dtype)`, `.to(out.dtype)`,
   `.to(x.dtype)` are all float64 here), so it is used unchanged.
   As a sanity check the original float32 `selective_scan_ref` is also run and its
   relative L2 distance to the float64 result printed.

Inputs are drawn in float32 with the distributions of mamba_ssm's tests (u, B, C, D, z
~ N(0,1); delta ~ 0.5·U(0,1); A ~ −0.5·U(0,1); delta_bias ~ 0.5·U(0,1)), stored as f32,
and promoted to float64 for the reference. Expected outputs are computed in float64 and
stored rounded to f32.

Initial state: `selective_scan_ref` has none. For the cases with an `h0`, the expected
`out` and `last_state` come from an independent route: `selective_state_update_ref`
(float64) iterated over the L time steps starting from h0. To check that route, every
case also runs it from a zero state and asserts it matches `selective_scan_ref`.

Grouped B/C in `selective_state_update_ref`: with a 3-d state (batch, dim, N) it
supports only one group (its groups are groups of *heads*). A per-channel grouping
(channel d uses group d // (dim/G), as `selective_scan_ref`'s
`repeat(B, "B G N L -> B (G H) N L")` defines it) is run through its 4-d form with
nheads = dim and headdim = 1: state (batch, dim, 1, N), x/dt/z (batch, dim, 1), A
(dim, 1, N), D/dt_bias (dim, 1), B/C (batch, G, N); its `repeat(B, "b g n -> b (g h) n")`
gives head d the group d // (dim/G), the same rule. Time-invariant B/C (dim, N) are
grouped B/C with G = dim, broadcast over the batch.

Format: see tests/fixtures/scan/README.md (written by this script).
"""

import argparse
import ast
import glob
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from safetensors import safe_open
from safetensors.torch import save_file

DEFAULT_VERSION = "2.3.2.post1"
SCAN_FILE = "mamba_ssm/ops/selective_scan_interface.py"
STEP_FILE = "mamba_ssm/ops/triton/selective_state_update.py"
F64 = torch.float64
F32 = torch.float32


# ---------------------------------------------------------------------------------------
# Getting the reference.


def fetch_sdist(version: str, dest: str) -> Path:
    env = dict(os.environ, MAMBA_SKIP_CUDA_BUILD="TRUE")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--no-binary", ":all:", f"mamba-ssm=={version}", "-d", dest,
    ]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
    found = glob.glob(os.path.join(dest, "mamba_ssm-*.tar.gz"))
    if len(found) != 1:
        sys.exit(f"expected one mamba_ssm sdist in {dest}, found {found}")
    return Path(found[0])


def read_member(sdist: Path, rel: str) -> str:
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            # members are "<pkg>-<version>/<rel>"
            if m.name.split("/", 1)[-1] == rel:
                return tar.extractfile(m).read().decode()
    sys.exit(f"{rel} not found in {sdist}")


def function_source(src: str, name: str) -> str:
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            if node.decorator_list:
                sys.exit(f"{name} has decorators; check the extraction")
            return ast.get_source_segment(src, node)
    sys.exit(f"{name} not found")


NARROW = re.compile(r"\.float\(|float32|\.half\(|bfloat16|float16|\.to\(torch\.float\b")


def load_reference(sdist: Path):
    scan_src = function_source(read_member(sdist, SCAN_FILE), "selective_scan_ref")
    step_src = function_source(read_member(sdist, STEP_FILE), "selective_state_update_ref")
    n_casts = scan_src.count(".float()")
    scan64_src = scan_src.replace(".float()", ".double()")
    for what, text in [("selective_scan_ref (float64)", scan64_src),
                       ("selective_state_update_ref", step_src)]:
        bad = NARROW.findall(text)
        if bad:
            sys.exit(f"{what}: narrowing casts left after the transform: {bad}")
    ns = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
    ns32 = dict(ns)
    exec(compile(scan64_src, "selective_scan_ref[float64]", "exec"), ns)
    exec(compile(step_src, "selective_state_update_ref", "exec"), ns)
    exec(compile(scan_src, "selective_scan_ref[original]", "exec"), ns32)
    print(f"extracted selective_scan_ref ({n_casts} '.float()' -> '.double()') and "
          f"selective_state_update_ref (unchanged)", file=sys.stderr)
    return ns["selective_scan_ref"], ns["selective_state_update_ref"], ns32["selective_scan_ref"]


# ---------------------------------------------------------------------------------------
# Inputs.


class Gen:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape):
        return torch.randn(*shape, generator=self.g, dtype=F32)

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.g, dtype=F32)


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def step_heads(step_ref, state, x, dt, A, B, C, D, z, dt_bias, softplus):
    """One `selective_state_update_ref` step with per-channel groups (see the module
    docs): state (batch, dim, N) f64 is updated in place; B, C (batch, G, N)."""
    batch, dim, n = state.shape
    st4 = state.view(batch, dim, 1, n)
    out = step_ref(
        st4, x[..., None], dt[..., None], A.view(dim, 1, n), B, C,
        D=None if D is None else D[:, None],
        z=None if z is None else z[..., None],
        dt_bias=None if dt_bias is None else dt_bias[:, None],
        dt_softplus=softplus,
    )
    return out[..., 0]


def scan_by_steps(step_ref, h0, u, delta, A, B, C, D, z, delta_bias, softplus, bc, groups):
    """The scan as `selective_state_update_ref` iterated over time from h0 (f64)."""
    batch, dim, L = u.shape
    state = h0.clone()
    outs = []
    for t in range(L):
        if bc == "invariant":
            Bt = B[None].expand(batch, dim, -1).contiguous()
            Ct = C[None].expand(batch, dim, -1).contiguous()
        elif bc == "variable":
            Bt, Ct = B[:, None, :, t].contiguous(), C[:, None, :, t].contiguous()
        else:
            Bt, Ct = B[..., t].contiguous(), C[..., t].contiguous()
        zt = None if z is None else z[..., t].contiguous()
        outs.append(step_heads(step_ref, state, u[..., t].contiguous(),
                               delta[..., t].contiguous(), A, Bt, Ct, D, zt, delta_bias,
                               softplus))
    return torch.stack(outs, dim=2), state


def save(tensors, path: Path, meta):
    """`safetensors.torch.save_file`, then the header rewritten with sorted keys: the
    writer orders `__metadata__` by a hash map, so without this every rerun changes the
    bytes of every file (the tensors are identical)."""
    save_file({k: v.contiguous() for k, v in tensors.items() if v is not None}, str(path),
              metadata=meta)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with safe_open(str(path), "pt") as f:  # still a valid file, same tensors
        assert f.metadata() == meta
        for k, v in tensors.items():
            assert v is None or torch.equal(f.get_tensor(k), v), (path, k)


# ---------------------------------------------------------------------------------------
# Cases.

# (batch, dim, L, N, bc, groups, D, z, delta_bias, softplus, h0, tag)
SCAN_CASES = [
    # L = 1 and short odd lengths
    (2, 5, 1, 16, "variable", 0, 1, 1, 1, 1, 0, ""),
    (1, 1, 1, 1, "invariant", 0, 0, 0, 0, 0, 0, ""),
    (1, 1, 3, 4, "variable", 0, 1, 0, 0, 1, 0, ""),
    (3, 7, 7, 4, "variable", 0, 1, 0, 1, 0, 0, ""),
    (2, 6, 7, 16, "grouped", 3, 0, 1, 0, 1, 0, ""),
    (2, 6, 33, 8, "invariant", 0, 1, 1, 1, 1, 0, ""),
    (2, 6, 33, 8, "grouped", 2, 1, 1, 1, 1, 0, ""),
    (1, 4, 33, 16, "variable", 0, 0, 0, 0, 0, 0, ""),
    # around chunk sizes
    (2, 8, 255, 16, "variable", 0, 1, 1, 1, 1, 0, ""),
    (1, 4, 256, 16, "grouped", 2, 1, 0, 1, 1, 0, ""),
    (1, 4, 256, 1, "variable", 0, 0, 1, 0, 1, 0, ""),
    (2, 6, 257, 16, "grouped", 3, 1, 1, 1, 1, 0, ""),
    (1, 3, 257, 4, "invariant", 0, 0, 0, 1, 0, 0, ""),
    (1, 3, 2047, 4, "variable", 0, 1, 1, 1, 1, 0, ""),
    (1, 2, 2048, 16, "invariant", 0, 1, 1, 0, 1, 0, ""),
    (1, 2, 2049, 4, "grouped", 2, 1, 0, 1, 1, 0, ""),
    # long
    (1, 1, 4099, 4, "variable", 0, 1, 1, 1, 1, 0, ""),
    (1, 2, 8192, 1, "variable", 0, 1, 0, 1, 1, 0, ""),
    # wide, short
    (1, 768, 3, 16, "variable", 0, 1, 1, 1, 1, 0, ""),
    (1, 768, 7, 16, "grouped", 3, 1, 0, 1, 1, 0, ""),
    (2, 64, 16, 16, "invariant", 0, 1, 1, 1, 1, 0, ""),
    # softplus on a wide delta range (reaches its linear branch, x > 20)
    (2, 4, 17, 8, "variable", 0, 1, 1, 1, 1, 0, "wide"),
    # with an initial state (expected values from iterated selective_state_update_ref)
    (2, 4, 33, 16, "variable", 0, 1, 1, 1, 1, 1, ""),
    (1, 6, 257, 8, "grouped", 3, 1, 0, 1, 1, 1, ""),
    (2, 3, 1, 4, "invariant", 0, 0, 1, 0, 0, 1, ""),
    (1, 5, 64, 16, "variable", 0, 0, 0, 0, 0, 1, ""),
]

# (batch, dim, N, groups (0: B/C (batch, N)), D, z, dt_bias, softplus, tag)
STEP_CASES = [
    (1, 1, 1, 0, 0, 0, 0, 0, ""),
    (2, 5, 16, 0, 1, 1, 1, 1, ""),
    (3, 6, 16, 2, 1, 0, 1, 1, ""),
    (2, 6, 4, 3, 0, 1, 0, 0, ""),
    (1, 768, 16, 0, 1, 1, 1, 1, ""),
    (2, 768, 16, 3, 1, 1, 0, 1, ""),
    (2, 64, 1, 0, 1, 0, 1, 0, ""),
    (2, 8, 8, 0, 1, 1, 1, 1, "wide"),
]


def scan_case(refs, case, seed):
    scan_ref, step_ref, scan_ref32 = refs
    batch, dim, L, n, bc, groups, has_d, has_z, has_bias, softplus, has_h0, tag = case
    softplus = bool(softplus)
    g = Gen(seed)
    u = g.normal(batch, dim, L)
    delta = 0.5 * g.rand(batch, dim, L)
    if tag == "wide":
        delta = 50.0 * g.rand(batch, dim, L) - 25.0
    A = -0.5 * g.rand(dim, n)
    if bc == "invariant":
        bc_shape = (dim, n)
    elif bc == "variable":
        bc_shape = (batch, n, L)
    else:
        assert dim % groups == 0
        bc_shape = (batch, groups, n, L)
    B = g.normal(*bc_shape)
    C = g.normal(*bc_shape)
    D = g.normal(dim) if has_d else None
    z = g.normal(batch, dim, L) if has_z else None
    delta_bias = 0.5 * g.rand(dim) if has_bias else None
    h0 = g.normal(batch, dim, n) if has_h0 else None

    d64 = lambda t: None if t is None else t.to(F64)
    args64 = (d64(u), d64(delta), d64(A), d64(B), d64(C))
    kw64 = dict(D=d64(D), z=d64(z), delta_bias=d64(delta_bias), delta_softplus=softplus)
    out_ref, last_ref = scan_ref(*args64, **kw64, return_last_state=True)
    assert out_ref.dtype == F64 and last_ref.dtype == F64
    out32, _ = scan_ref32(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                          delta_softplus=softplus, return_last_state=True)
    f32_err = rel_l2(out32, out_ref)

    # the step route from zero must reproduce selective_scan_ref
    step_args = (d64(u), d64(delta), d64(A), d64(B), d64(C), d64(D), d64(z),
                 d64(delta_bias), softplus, bc, groups)
    out_s, last_s = scan_by_steps(step_ref, torch.zeros(batch, dim, n, dtype=F64), *step_args)
    route = max(rel_l2(out_s, out_ref), rel_l2(last_s, last_ref))
    assert route < 1e-12, f"step route disagrees with selective_scan_ref: {route}"

    if has_h0:
        out, last = scan_by_steps(step_ref, d64(h0), *step_args)
        how = "selective_state_update_ref iterated from h0 (float64)"
    else:
        out, last = out_ref, last_ref
        how = "selective_scan_ref (float64)"
    assert out.dtype == F64 and last.dtype == F64

    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z,
               "delta_bias": delta_bias, "h0": h0,
               "out": out.to(F32), "last_state": last.to(F32)}
    bcname = {"invariant": "inv", "variable": "var"}.get(bc, f"g{groups}")
    name = f"scan_b{batch}_d{dim}_l{L}_n{n}_{bcname}"
    name += "".join(f"_{k}" for k, on in [("D", has_d), ("z", has_z), ("bias", has_bias),
                                           ("sp", softplus), ("h0", has_h0)] if on)
    name += f"_{tag}" if tag else ""
    meta = {"kind": "scan", "delta_softplus": "1" if softplus else "0", "bc": bc,
            "groups": str(groups if bc == "grouped" else 0), "batch": str(batch),
            "dim": str(dim), "len": str(L), "dstate": str(n), "layout": "channel_major",
            "seed": str(seed), "reference": how,
            "f32_ref_rel_l2": f"{f32_err:.3e}", "step_route_rel_l2": f"{route:.3e}"}
    return name, tensors, meta, f32_err, route


def step_case(refs, case, seed):
    _, step_ref, _ = refs
    batch, dim, n, groups, has_d, has_z, has_bias, softplus, tag = case
    softplus = bool(softplus)
    g = Gen(seed)
    state = g.normal(batch, dim, n)
    x = g.normal(batch, dim)
    dt = 0.5 * g.rand(batch, dim)
    if tag == "wide":
        dt = 50.0 * g.rand(batch, dim) - 25.0
    A = -0.5 * g.rand(dim, n)
    bc_shape = (batch, n) if groups == 0 else (batch, groups, n)
    B = g.normal(*bc_shape)
    C = g.normal(*bc_shape)
    D = g.normal(dim) if has_d else None
    z = g.normal(batch, dim) if has_z else None
    dt_bias = 0.5 * g.rand(dim) if has_bias else None

    d64 = lambda t: None if t is None else t.to(F64)
    new_state = d64(state).clone()
    if groups == 0:
        out = step_ref(new_state, d64(x), d64(dt), d64(A), d64(B), d64(C), D=d64(D),
                       z=d64(z), dt_bias=d64(dt_bias), dt_softplus=softplus)
    else:
        out = step_heads(step_ref, new_state, d64(x), d64(dt), d64(A), d64(B), d64(C),
                         d64(D), d64(z), d64(dt_bias), softplus)
    assert out.dtype == F64 and new_state.dtype == F64
    tensors = {"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z,
               "dt_bias": dt_bias, "out": out.to(F32), "new_state": new_state.to(F32)}
    name = f"step_b{batch}_d{dim}_n{n}_" + ("bn" if groups == 0 else f"g{groups}")
    name += "".join(f"_{k}" for k, on in [("D", has_d), ("z", has_z), ("bias", has_bias),
                                           ("sp", softplus)] if on)
    name += f"_{tag}" if tag else ""
    meta = {"kind": "step", "dt_softplus": "1" if softplus else "0",
            "groups": str(groups), "batch": str(batch), "dim": str(dim), "dstate": str(n),
            "seed": str(seed), "reference": "selective_state_update_ref (float64)"}
    return name, tensors, meta


README = """# Scan fixtures from mamba_ssm

Expected values of the selective scan and of the single-step state update computed by
the independent reference, mamba_ssm's own `selective_scan_ref` and
`selective_state_update_ref` (mamba-ssm {version}, from the PyPI sdist, run on the CPU
in float64 through PyTorch {torch}). They are checked by `tests/common/fixtures.rs`
(`check_scan_fixtures`, `check_step_fixtures`); `tests/scan_fixtures.rs` runs those on
the CPU backend.

Regenerate (from the repository root; needs PyPI):

    /opt/pyref/bin/pip install torch numpy einops safetensors   # once
    /opt/pyref/bin/python tools/make_scan_fixtures.py

The script documents how the reference functions are extracted without importing
mamba_ssm, how `selective_scan_ref` is made to compute in float64 (its `.float()` casts
become `.double()`), and how initial states and per-channel groups are run through
`selective_state_update_ref`.

## Format

One safetensors file per case. All tensors are f32 (little-endian). Inputs were drawn
in f32 (u, B, C, D, z, state/x ~ N(0,1); delta/dt ~ 0.5·U(0,1); A ~ −0.5·U(0,1);
delta_bias/dt_bias ~ 0.5·U(0,1); cases tagged `wide` draw delta/dt ~ U(−25, 25) to reach
softplus' linear branch) and promoted to float64 for the reference; expected outputs are
the float64 results rounded to f32. A tensor is absent when the case does not use it.

`__metadata__` (all strings): `kind` (`scan` or `step`), `delta_softplus` /
`dt_softplus` (`1`/`0`), `groups`, `batch`, `dim`, `dstate`, `seed`, `reference` (which
function produced the expected values); scan files also have `len`, `bc`
(`invariant`/`variable`/`grouped`), `layout` (`channel_major`, the only one stored),
`f32_ref_rel_l2` (how far the original float32 `selective_scan_ref` is from the float64
result) and `step_route_rel_l2` (how far the iterated step route is from
`selective_scan_ref` from a zero state).

### `scan_*.safetensors` (`kind = scan`), official layout

| tensor | shape |
|---|---|
| `u`, `delta`, `z` | (batch, dim, L) |
| `A` | (dim, N) |
| `B`, `C` | (dim, N) invariant, (batch, N, L) variable, (batch, G, N, L) grouped |
| `D`, `delta_bias` | (dim) |
| `h0` | (batch, dim, N): initial state, when present |
| `out` | (batch, dim, L) expected |
| `last_state` | (batch, dim, N) expected final state |

Without `h0` the expected values are `selective_scan_ref(..., return_last_state=True)`
(zero initial state). With `h0` they come from `selective_state_update_ref` iterated over
the L steps from h0.

### `step_*.safetensors` (`kind = step`)

Named after `selective_state_update_ref`'s arguments:

| tensor | shape |
|---|---|
| `state` | (batch, dim, N): state before the step |
| `x`, `dt`, `z` | (batch, dim) |
| `A` | (dim, N) |
| `B`, `C` | (batch, N), or (batch, G, N) grouped (channel d uses group d // (dim/G)) |
| `D`, `dt_bias` | (dim) |
| `out` | (batch, dim) expected |
| `new_state` | (batch, dim, N) expected state after the step |

## Files

{files}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=DEFAULT_VERSION)
    ap.add_argument("--out", default="tests/fixtures/scan")
    ap.add_argument("--sdist", default=None)
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(a.sdist) if a.sdist else fetch_sdist(a.version, tmp)
        version = sdist.name[len("mamba_ssm-"):-len(".tar.gz")]
        refs = load_reference(sdist)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in list(out_dir.glob("scan_*.safetensors")) + list(out_dir.glob("step_*.safetensors")):
        old.unlink()

    rows = []
    total = 0
    worst_f32 = 0.0
    for i, case in enumerate(SCAN_CASES):
        name, tensors, meta, f32_err, route = scan_case(refs, case, seed=1000 + i)
        meta["mamba_ssm"] = version
        path = out_dir / f"{name}.safetensors"
        save(tensors, path, meta)
        size = path.stat().st_size
        total += size
        worst_f32 = max(worst_f32, f32_err)
        rows.append(f"| `{path.name}` | {size} | {meta['reference']} |")
        print(f"wrote {path} ({size} bytes; f32 ref rel L2 {f32_err:.2e}; "
              f"step route {route:.1e})")
    for i, case in enumerate(STEP_CASES):
        name, tensors, meta = step_case(refs, case, seed=2000 + i)
        meta["mamba_ssm"] = version
        path = out_dir / f"{name}.safetensors"
        save(tensors, path, meta)
        size = path.stat().st_size
        total += size
        rows.append(f"| `{path.name}` | {size} | {meta['reference']} |")
        print(f"wrote {path} ({size} bytes)")
    files = "| file | bytes | expected values from |\n|---|---|---|\n" + "\n".join(rows)
    (out_dir / "README.md").write_text(
        README.format(version=version, torch=torch.__version__, files=files))
    print(f"wrote {out_dir / 'README.md'}")
    print(f"{len(SCAN_CASES)} scan + {len(STEP_CASES)} step fixtures, {total} bytes; "
          f"worst float32 selective_scan_ref vs float64: rel L2 {worst_f32:.2e}")


if __name__ == "__main__":
    main()
