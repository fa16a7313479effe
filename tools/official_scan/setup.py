#!/usr/bin/env python3
"""Forward-only build of mamba_ssm's selective-scan CUDA extension, `selective_scan_cuda`.

The official package (mamba_ssm's setup.py) compiles selective_scan.cpp, the three
forward files and six backward files for about nine GPU architectures; the backward
files dominate the time. To time the official forward kernel on one GPU we compile only

    csrc/selective_scan/selective_scan.cpp           (the pybind11 module: fwd and bwd)
    csrc/selective_scan/selective_scan_fwd_fp32.cu   (input float;    weight float, complex)
    csrc/selective_scan/selective_scan_fwd_fp16.cu   (input at::Half; weight float, complex)
    csrc/selective_scan/selective_scan_fwd_bf16.cu   (input bf16;     weight float, complex)
    tools/official_scan/bwd_stub.cpp                 (the bwd symbols, each a TORCH_CHECK(false))

for the architectures in TORCH_CUDA_ARCH_LIST (default 9.0: H100/H200), with the
official nvcc flags. The kernel code is the sdist's, untouched; the module has the same
name and `fwd` as the official one, so `selective_scan_fn` runs on it unchanged.

Usage (tools/official_scan/run.sh does this; see there):

    MAMBA_SSM_SRC=/path/to/mamba_ssm-2.3.2.post1 \\
        python3 tools/official_scan/setup.py build_ext --build-temp T --build-lib L
    MAMBA_SSM_SRC=... python3 tools/official_scan/setup.py --check   # static checks only

Environment: MAMBA_SSM_SRC (the unpacked sdist; required), TORCH_CUDA_ARCH_LIST
(default 9.0), MAX_JOBS (ninja's parallelism; default: the CPU count), OFFICIAL_SCAN_STD
(e.g. c++17; default: none given, so torch's cpp_extension picks the standard its
headers need: mamba_ssm passes -std=c++17, which newer torch headers may reject),
OFFICIAL_SCAN_STRICT_CUDA=1 (fail, rather than warn, when nvcc's CUDA major version
differs from the one torch was built with).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUB = HERE / "bwd_stub.cpp"
SOURCES = [
    "selective_scan.cpp",
    "selective_scan_fwd_fp32.cu",
    "selective_scan_fwd_fp16.cu",
    "selective_scan_fwd_bf16.cu",
]
# The official nvcc flags (mamba_ssm setup.py, non-ROCm branch), less -std (see the module
# docs), "--threads 4" (parallel compilation across -gencode targets; we build one) and
# its own -gencode list (the architectures come from TORCH_CUDA_ARCH_LIST instead).
NVCC_FLAGS = [
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
    "--ptxas-options=-v",  # register/spill report per kernel, into the build log
    "-lineinfo",
]
CXX_FLAGS = ["-O3"]
INPUT_TYPES = ["float", "at::Half", "at::BFloat16"]
WEIGHT_TYPES = ["float", "complex_t"]


def die(msg):
    print(f"official_scan/setup.py: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def norm(line):
    return re.sub(r"\s+", " ", line.strip())


def instantiations(text, fn):
    """`template void fn<...>(...);` lines in `text`, whitespace-normalised."""
    pat = re.compile(r"^\s*template\s+void\s+" + fn + r"\s*<[^;]*;", re.M)
    return sorted(norm(m.group(0)) for m in pat.finditer(text))


def check_sources(src: Path) -> Path:
    """Static checks that the forward-only build will compile and link; returns the
    csrc/selective_scan folder. Each failure names what differs."""
    csrc = src / "csrc" / "selective_scan"
    if not csrc.is_dir():
        die(f"{csrc} not found: MAMBA_SSM_SRC must be the unpacked sdist root")
    for s in SOURCES:
        if not (csrc / s).is_file():
            die(f"{csrc / s} missing: this mamba_ssm version splits its sources differently")
    if not STUB.is_file():
        die(f"{STUB} missing")

    # 1. Our stub instantiates exactly the bwd type pairs the official bwd files do.
    official = []
    for f in sorted(csrc.glob("selective_scan_bwd_*.cu")):
        official += instantiations(f.read_text(), "selective_scan_bwd_cuda")
    stub_text = STUB.read_text()
    block = stub_text.split("// BEGIN BWD INSTANTIATIONS", 1)[-1].split("// END BWD", 1)[0]
    ours = instantiations(block, "selective_scan_bwd_cuda")
    if sorted(official) != sorted(ours):
        die("bwd instantiations differ between the sdist and bwd_stub.cpp:\n  sdist: "
            + "\n         ".join(official) + "\n  stub:  " + "\n         ".join(ours))

    # 2. The three fwd files we compile define every (input, weight) pair that
    #    selective_scan.cpp's dispatch (DISPATCH_ITYPE_* x DISPATCH_WTYPE_FLOAT_AND_COMPLEX)
    #    can call.
    fwd = []
    for s in SOURCES[1:]:
        fwd += instantiations((csrc / s).read_text(), "selective_scan_fwd_cuda")
    want = sorted(
        norm(f"template void selective_scan_fwd_cuda<{i}, {w}>(SSMParamsBase &params, "
             f"cudaStream_t stream);")
        for i in INPUT_TYPES for w in WEIGHT_TYPES)
    if sorted(fwd) != want:
        die("fwd instantiations in the fwd .cu files are not the expected 6:\n  found: "
            + "\n         ".join(sorted(fwd)) + "\n  want:  " + "\n         ".join(want))

    # 3. selective_scan.cpp declares the two templates with the signatures used above
    #    (a changed signature would link against nothing), and its dispatch uses exactly
    #    these types.
    cpp = (csrc / "selective_scan.cpp").read_text()
    for decl in [
        r"template\s*<\s*typename input_t,\s*typename weight_t\s*>\s*void\s+selective_scan_fwd_cuda\s*\(\s*SSMParamsBase\s*&\s*params,\s*cudaStream_t\s+stream\s*\)\s*;",
        r"template\s*<\s*typename input_t,\s*typename weight_t\s*>\s*void\s+selective_scan_bwd_cuda\s*\(\s*SSMParamsBwd\s*&\s*params,\s*cudaStream_t\s+stream\s*\)\s*;",
        r"m\.def\(\s*\"fwd\"",
    ]:
        if not re.search(decl, cpp):
            die(f"selective_scan.cpp no longer matches /{decl}/")
    itypes = set(re.findall(r"using input_t = ([\w:]+);", cpp))
    wtypes = set(re.findall(r"using weight_t = ([\w:<>]+);", cpp))
    if itypes != {"at::Half", "at::BFloat16", "float"}:
        die(f"selective_scan.cpp dispatches input types {sorted(itypes)}")
    # DISPATCH_WTYPE_FLOAT_AND_HALF_AND_BF16 is defined but unused; the complex one is used.
    if not {"float", "c10::complex<float>"} <= wtypes:
        die(f"selective_scan.cpp dispatches weight types {sorted(wtypes)}")
    used = re.findall(r"(DISPATCH_WTYPE_\w+)\(A\.scalar_type\(\)", cpp)
    if set(used) != {"DISPATCH_WTYPE_FLOAT_AND_COMPLEX"}:
        die(f"selective_scan.cpp dispatches weights with {sorted(set(used))}")
    print(f"official_scan/setup.py: static checks passed ({len(ours)} bwd stubs, "
          f"{len(fwd)} fwd instantiations) for {src}", flush=True)
    return csrc


def nvcc_version(cuda_home):
    out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"],
                         capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def main():
    src_env = os.environ.get("MAMBA_SSM_SRC")
    if not src_env:
        die("set MAMBA_SSM_SRC to the unpacked mamba_ssm sdist")
    csrc = check_sources(Path(src_env).resolve())
    if sys.argv[1:] == ["--check"]:
        return

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))

    from setuptools import setup
    import torch
    from torch.utils import cpp_extension
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    if torch.version.cuda is None:
        die(f"torch {torch.__version__} was built without CUDA")
    cuda_home = cpp_extension.CUDA_HOME
    if not cuda_home or not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        die(f"no nvcc (CUDA_HOME={cuda_home}); set CUDA_HOME to the toolkit")
    nv = nvcc_version(cuda_home)
    torch_cuda = tuple(int(x) for x in torch.version.cuda.split(".")[:2])
    print(f"official_scan/setup.py: torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"CUDA_HOME={cuda_home}, nvcc {nv}, "
          f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}, "
          f"MAX_JOBS={os.environ['MAX_JOBS']}, ninja={cpp_extension.is_ninja_available()}, "
          f"python {sys.version.split()[0]}", flush=True)
    if nv is not None and nv[0] != torch_cuda[0]:
        # torch refuses a major mismatch (RuntimeError in _check_cuda_version). The
        # extension then links the toolkit's libcudart next to torch's own; that usually
        # works (both share the driver's primary context) but is not what the official
        # wheel does: say so loudly, and let OFFICIAL_SCAN_STRICT_CUDA=1 make it fatal.
        msg = (f"nvcc is CUDA {nv[0]}.{nv[1]} but torch was built with CUDA "
               f"{torch.version.cuda}")
        if os.environ.get("OFFICIAL_SCAN_STRICT_CUDA") == "1":
            die(msg)
        print(f"official_scan/setup.py: WARNING: {msg}; building anyway "
              f"(torch's major-version check disabled)", flush=True)
        cpp_extension._check_cuda_version = lambda *a, **k: None

    std = os.environ.get("OFFICIAL_SCAN_STD")
    std_flag = [f"-std={std}"] if std else []
    sources = [str(csrc / s) for s in SOURCES] + [str(STUB)]
    ext = CUDAExtension(
        name="selective_scan_cuda",
        sources=sources,
        include_dirs=[str(csrc)],  # absolute: ninja builds need that
        extra_compile_args={"cxx": CXX_FLAGS + std_flag, "nvcc": NVCC_FLAGS + std_flag},
    )
    print("official_scan/setup.py: sources:\n  " + "\n  ".join(sources), flush=True)
    print("official_scan/setup.py: nvcc flags: " + " ".join(NVCC_FLAGS + std_flag)
          + f" + torch's arch flags for {os.environ['TORCH_CUDA_ARCH_LIST']}", flush=True)
    setup(
        name="official_selective_scan_fwd",
        version="0",
        ext_modules=[ext],
        cmdclass={"build_ext": BuildExtension.with_options(
            use_ninja=cpp_extension.is_ninja_available())},
    )


if __name__ == "__main__":
    main()
