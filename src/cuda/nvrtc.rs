//! The CUDA C sources in `kernels/` and their run-time compilation by NVRTC.
//!
//! Every kernel file is embedded in the binary with `include_str!` and compiled on first
//! use for the compute capability of the device (`--gpu-architecture=sm_XY`), to a
//! CUBIN the driver loads without a JIT step. CUBIN is used rather than PTX because a
//! driver refuses PTX written by a newer NVRTC than itself, while a CUBIN of the same
//! major CUDA version loads. If NVRTC does not know the device's `sm_XY` (a GPU newer
//! than the NVRTC), the source is compiled to PTX for the newest virtual architecture
//! NVRTC supports, and the driver JIT-compiles it.
//!
//! Every file starts with `#include "common.cuh"`: [`COMMON_HEADER`] is handed to NVRTC
//! as that header with each program (NVRTC itself reads no files), so the structs and
//! helpers the kernels share are declared once, and a C++ compiler given `-I kernels`
//! sees the same text.
//!
//! The functions here need only `libnvrtc` (no GPU, no driver), so
//! `tests/nvrtc_compile.rs` runs them on machines without a GPU.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{result as nv, sys};

use crate::error::{Error, Result};
use crate::tensor::DType;

/// One kernel file of `kernels/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelSource {
    /// Base name, as in `kernels/<name>.cu` and `shaders/<name>.wgsl`.
    pub name: &'static str,
    /// The CUDA C source.
    pub source: &'static str,
}

macro_rules! kernel {
    ($name:literal) => {
        KernelSource {
            name: $name,
            source: include_str!(concat!("../../kernels/", $name, ".cu")),
        }
    };
}

/// `kernels/common.cuh`, the header every kernel file includes.
pub const COMMON_HEADER: KernelSource = KernelSource {
    name: "common.cuh",
    source: include_str!("../../kernels/common.cuh"),
};

pub const SELECTIVE_SCAN: KernelSource = kernel!("selective_scan");
pub const SELECTIVE_STATE_UPDATE: KernelSource = kernel!("selective_state_update");
pub const DECODE_STEP: KernelSource = kernel!("decode_step");
pub const SSD_SCAN: KernelSource = kernel!("ssd_scan");
pub const CAUSAL_CONV1D: KernelSource = kernel!("causal_conv1d");
pub const RMS_NORM: KernelSource = kernel!("rms_norm");
pub const EMBEDDING: KernelSource = kernel!("embedding");
pub const ELEMENTWISE: KernelSource = kernel!("elementwise");
pub const ARGMAX: KernelSource = kernel!("argmax");
pub const COPY: KernelSource = kernel!("copy");
pub const MATMUL: KernelSource = kernel!("matmul");
pub const MATMUL_Q8: KernelSource = kernel!("matmul_q8");

/// Every file of `kernels/`.
pub const KERNELS: &[KernelSource] = &[
    SELECTIVE_SCAN,
    SELECTIVE_STATE_UPDATE,
    DECODE_STEP,
    SSD_SCAN,
    CAUSAL_CONV1D,
    RMS_NORM,
    EMBEDDING,
    ELEMENTWISE,
    ARGMAX,
    COPY,
    MATMUL,
    MATMUL_Q8,
];

/// The element type a kernel template was instantiated for (the `_f32` / `_f16` /
/// `_bf16` suffix of its entry point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Float {
    F32,
    F16,
    BF16,
}

impl Float {
    /// The instance for a tensor's dtype, or the typed error naming the op and tensor.
    pub fn of(op: &'static str, tensor: &'static str, dtype: DType) -> Result<Float> {
        match dtype {
            DType::F32 => Ok(Float::F32),
            DType::F16 => Ok(Float::F16),
            DType::BF16 => Ok(Float::BF16),
            DType::U32 => Err(Error::DType {
                op,
                tensor,
                got: dtype,
                expected: "f32, f16 or bf16",
            }),
        }
    }
}

/// One CUDA kernel entry point: named like the CPU function and the shader entry point
/// (plus the element-type suffix of a template instance), in the file of its op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Instantiated on the I/O type of u, delta, B, C, z and out.
    SelectiveScan(Float),
    SelectiveStateUpdate,
    SsdScan,
    /// The chunked form of the same scan, for prefills.
    SsdScanChunked,
    CausalConv1d,
    CausalConv1dState,
    CausalConv1dUpdate,
    /// Instantiated on the weight type.
    RmsNorm(Float),
    /// The fused decode step (`decode_step.cu`), instantiated on the projections' type.
    MixerIn(Float),
    XProj(Float),
    SsmStep(Float),
    /// Instantiated on the table type.
    Embedding(Float),
    Elementwise,
    Argmax,
    Copy,
    /// The small-m matmul, instantiated on the weight type.
    MatmulRows(Float),
    /// f16 / bf16 weights widened to f32 before a cuBLAS GEMM (there is no f32 widen).
    Widen {
        bf16: bool,
    },
    /// The bias broadcast into out before an accumulating cuBLAS GEMM.
    BiasRows,
    /// Q8_0 weights (`matmul_q8.cu`).
    MatmulQ8,
    /// Q8_0 weights with int8 activations (`matmul_q8_int8` in `matmul_q8.cu`).
    MatmulQ8Int8,
}

impl Kernel {
    /// Every entry point the backend loads.
    pub const ALL: &'static [Kernel] = &[
        Kernel::SelectiveScan(Float::F32),
        Kernel::SelectiveScan(Float::F16),
        Kernel::SelectiveScan(Float::BF16),
        Kernel::SelectiveStateUpdate,
        Kernel::SsdScan,
        Kernel::SsdScanChunked,
        Kernel::CausalConv1d,
        Kernel::CausalConv1dState,
        Kernel::CausalConv1dUpdate,
        Kernel::RmsNorm(Float::F32),
        Kernel::RmsNorm(Float::F16),
        Kernel::RmsNorm(Float::BF16),
        Kernel::MixerIn(Float::F32),
        Kernel::MixerIn(Float::F16),
        Kernel::MixerIn(Float::BF16),
        Kernel::XProj(Float::F32),
        Kernel::XProj(Float::F16),
        Kernel::XProj(Float::BF16),
        Kernel::SsmStep(Float::F32),
        Kernel::SsmStep(Float::F16),
        Kernel::SsmStep(Float::BF16),
        Kernel::Embedding(Float::F32),
        Kernel::Embedding(Float::F16),
        Kernel::Embedding(Float::BF16),
        Kernel::Elementwise,
        Kernel::Argmax,
        Kernel::Copy,
        Kernel::MatmulRows(Float::F32),
        Kernel::MatmulRows(Float::F16),
        Kernel::MatmulRows(Float::BF16),
        Kernel::Widen { bf16: false },
        Kernel::Widen { bf16: true },
        Kernel::BiasRows,
        Kernel::MatmulQ8,
        Kernel::MatmulQ8Int8,
    ];

    /// The file that defines it.
    pub fn source(self) -> &'static KernelSource {
        match self {
            Kernel::SelectiveScan(_) => &SELECTIVE_SCAN,
            Kernel::SelectiveStateUpdate => &SELECTIVE_STATE_UPDATE,
            Kernel::SsdScan | Kernel::SsdScanChunked => &SSD_SCAN,
            Kernel::CausalConv1d | Kernel::CausalConv1dState | Kernel::CausalConv1dUpdate => {
                &CAUSAL_CONV1D
            }
            Kernel::RmsNorm(_) => &RMS_NORM,
            Kernel::MixerIn(_) | Kernel::XProj(_) | Kernel::SsmStep(_) => &DECODE_STEP,
            Kernel::Embedding(_) => &EMBEDDING,
            Kernel::Elementwise => &ELEMENTWISE,
            Kernel::Argmax => &ARGMAX,
            Kernel::Copy => &COPY,
            Kernel::MatmulRows(_) | Kernel::Widen { .. } | Kernel::BiasRows => &MATMUL,
            Kernel::MatmulQ8 | Kernel::MatmulQ8Int8 => &MATMUL_Q8,
        }
    }

    /// Its `extern "C"` name.
    pub fn entry(self) -> &'static str {
        use Float::{BF16, F16, F32};
        match self {
            Kernel::SelectiveScan(F32) => "selective_scan_f32",
            Kernel::SelectiveScan(F16) => "selective_scan_f16",
            Kernel::SelectiveScan(BF16) => "selective_scan_bf16",
            Kernel::SelectiveStateUpdate => "selective_state_update",
            Kernel::SsdScan => "ssd_scan",
            Kernel::SsdScanChunked => "ssd_scan_chunked",
            Kernel::CausalConv1d => "causal_conv1d",
            Kernel::CausalConv1dState => "causal_conv1d_state",
            Kernel::CausalConv1dUpdate => "causal_conv1d_update",
            Kernel::RmsNorm(F32) => "rms_norm_f32",
            Kernel::RmsNorm(F16) => "rms_norm_f16",
            Kernel::RmsNorm(BF16) => "rms_norm_bf16",
            Kernel::MixerIn(F32) => "mixer_in_f32",
            Kernel::MixerIn(F16) => "mixer_in_f16",
            Kernel::MixerIn(BF16) => "mixer_in_bf16",
            Kernel::XProj(F32) => "x_proj_f32",
            Kernel::XProj(F16) => "x_proj_f16",
            Kernel::XProj(BF16) => "x_proj_bf16",
            Kernel::SsmStep(F32) => "ssm_step_f32",
            Kernel::SsmStep(F16) => "ssm_step_f16",
            Kernel::SsmStep(BF16) => "ssm_step_bf16",
            Kernel::Embedding(F32) => "embedding_f32",
            Kernel::Embedding(F16) => "embedding_f16",
            Kernel::Embedding(BF16) => "embedding_bf16",
            Kernel::Elementwise => "elementwise",
            Kernel::Argmax => "argmax",
            Kernel::Copy => "copy",
            Kernel::MatmulRows(F32) => "matmul_rows_f32",
            Kernel::MatmulRows(F16) => "matmul_rows_f16",
            Kernel::MatmulRows(BF16) => "matmul_rows_bf16",
            Kernel::Widen { bf16: false } => "widen_f16",
            Kernel::Widen { bf16: true } => "widen_bf16",
            Kernel::BiasRows => "bias_rows",
            Kernel::MatmulQ8 => "matmul_q8",
            Kernel::MatmulQ8Int8 => "matmul_q8_int8",
        }
    }
}

/// What NVRTC produced.
#[derive(Debug, Clone)]
pub enum Image {
    /// Machine code for one `sm_XY`.
    Cubin(Vec<u8>),
    /// PTX for a virtual architecture, JIT-compiled by the driver at load time.
    Ptx(String),
}

/// Can libnvrtc be loaded? (cudarc panics on first use when it cannot.)
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names; calls nothing in them.
    unsafe { sys::is_culib_present() }
}

fn unavailable(why: String) -> Error {
    Error::BackendUnavailable {
        backend: "cuda",
        why,
    }
}

/// A loadable NVRTC of version 11.2 or later: older ones lack `nvrtcGetSupportedArchs`
/// and `nvrtcGetCUBIN`, and cudarc would panic on the missing symbol at first use.
fn require_nvrtc() -> Result<()> {
    if !nvrtc_available() {
        return Err(unavailable(
            "libnvrtc (NVRTC, the run-time CUDA compiler) cannot be loaded; \
             add the CUDA toolkit's lib64 folder (or tools/install_nvrtc.sh's) to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let v = loaded_version()?;
    if v < (11, 2) {
        return Err(unavailable(format!(
            "libnvrtc {}.{} is older than 11.2, the oldest the kernels are compiled with",
            v.0, v.1
        )));
    }
    Ok(())
}

fn loaded_version() -> Result<(i32, i32)> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: callers checked that libnvrtc is loadable; `nvrtcVersion` exists in every
    // NVRTC; both pointers are valid for writes.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcVersion", e))?;
    Ok((major, minor))
}

/// NVRTC's version, e.g. `(13, 0)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    loaded_version()
}

/// The real architectures (`XY` of `sm_XY`) this NVRTC can compile for.
pub fn supported_archs() -> Result<Vec<i32>> {
    require_nvrtc()?;
    let mut n: c_int = 0;
    // SAFETY: libnvrtc is loadable; `n` is valid for writes.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcGetNumSupportedArchs", e))?;
    let mut v = vec![0 as c_int; n.max(0) as usize];
    // SAFETY: `v` has room for the `n` entries NVRTC reported.
    unsafe { sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcGetSupportedArchs", e))?;
    Ok(v)
}

fn nvrtc_err(call: &str, e: nv::NvrtcError) -> Error {
    Error::Device {
        backend: "cuda",
        why: format!("{call} failed: {:?}", e.0),
    }
}

/// An NVRTC program, destroyed on drop.
struct Program {
    prog: sys::nvrtcProgram,
    // NVRTC may keep pointers into these until the program is destroyed.
    _src: CString,
    _name: CString,
    _header: CString,
    _header_name: CString,
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `prog` came from `create_program` and is destroyed exactly once, here.
        // A failure to free cannot be reported from drop; it only leaks the program.
        let _ = unsafe { nv::destroy_program(self.prog) };
    }
}

impl Program {
    fn log(&self) -> String {
        // SAFETY: `prog` is a live program (destroyed only in drop).
        match unsafe { nv::get_program_log(self.prog) } {
            Ok(raw) => {
                let bytes: Vec<u8> = raw
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).trim().to_string()
            }
            Err(e) => format!("(no log: {:?})", e.0),
        }
    }
}

/// Compiles one kernel file: to CUBIN for `sm_{major}{minor}` when `cubin`, else to PTX
/// for `compute_{major}{minor}`. Errors carry NVRTC's log.
pub fn compile(k: &KernelSource, (major, minor): (i32, i32), cubin: bool) -> Result<Image> {
    require_nvrtc()?;
    let file = format!("{}.cu", k.name);
    let arch = if cubin {
        format!("--gpu-architecture=sm_{major}{minor}")
    } else {
        format!("--gpu-architecture=compute_{major}{minor}")
    };
    let opts = [arch.as_str(), "--std=c++17"];
    let fail = |why: String| Error::Device {
        backend: "cuda",
        why: format!("NVRTC could not compile kernels/{file} ({arch}): {why}"),
    };
    let src = CString::new(k.source).map_err(|_| fail("source contains a NUL byte".into()))?;
    let name = CString::new(file.clone()).map_err(|_| fail("bad file name".into()))?;
    let header = CString::new(COMMON_HEADER.source)
        .map_err(|_| fail("common.cuh contains a NUL byte".into()))?;
    let header_name =
        CString::new(COMMON_HEADER.name).map_err(|_| fail("bad header name".into()))?;
    let headers = [header.as_ptr()];
    let include_names = [header_name.as_ptr()];
    let mut raw = std::mem::MaybeUninit::uninit();
    // SAFETY: every pointer is a NUL-terminated string that outlives the program (kept
    // in `Program` below); the header arrays hold exactly the 1 entry announced.
    unsafe {
        sys::nvrtcCreateProgram(
            raw.as_mut_ptr(),
            src.as_ptr(),
            name.as_ptr(),
            1,
            headers.as_ptr(),
            include_names.as_ptr(),
        )
    }
    .result()
    .map_err(|e| fail(format!("nvrtcCreateProgram: {:?}", e.0)))?;
    let prog = Program {
        // SAFETY: nvrtcCreateProgram succeeded, so it wrote the program handle.
        prog: unsafe { raw.assume_init() },
        _src: src,
        _name: name,
        _header: header,
        _header_name: header_name,
    };
    // SAFETY: `prog.prog` is a live program created above.
    if let Err(e) = unsafe { nv::compile_program(prog.prog, &opts) } {
        return Err(fail(format!("{:?}\n{}", e.0, prog.log())));
    }
    if cubin {
        let mut size = 0usize;
        // SAFETY: live, compiled program; `size` is valid for writes.
        unsafe { sys::nvrtcGetCUBINSize(prog.prog, &mut size) }
            .result()
            .map_err(|e| fail(format!("nvrtcGetCUBINSize: {:?}", e.0)))?;
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has the `size` bytes NVRTC asked for.
        unsafe { sys::nvrtcGetCUBIN(prog.prog, buf.as_mut_ptr() as *mut c_char) }
            .result()
            .map_err(|e| fail(format!("nvrtcGetCUBIN: {:?}", e.0)))?;
        if buf.is_empty() {
            return Err(fail("NVRTC returned an empty CUBIN".into()));
        }
        Ok(Image::Cubin(buf))
    } else {
        // SAFETY: live, compiled program.
        let raw = unsafe { nv::get_ptx(prog.prog) }
            .map_err(|e| fail(format!("nvrtcGetPTX: {:?}", e.0)))?;
        // SAFETY: get_ptx returns the NUL-terminated PTX text.
        let ptx = unsafe { CStr::from_ptr(raw.as_ptr()) };
        Ok(Image::Ptx(ptx.to_string_lossy().into_owned()))
    }
}

/// Compiles for a device: CUBIN for its `sm_XY` if NVRTC supports it, else PTX for the
/// newest architecture NVRTC supports that is not newer than the device.
pub fn compile_for_device(k: &KernelSource, cc: (i32, i32)) -> Result<Image> {
    let want = cc.0 * 10 + cc.1;
    let archs = supported_archs()?;
    if archs.contains(&want) {
        return compile(k, cc, true);
    }
    match archs.iter().copied().filter(|&a| a <= want).max() {
        Some(a) => compile(k, (a / 10, a % 10), false),
        None => Err(unavailable(format!(
            "this NVRTC supports sm_{archs:?}, none of which runs on a compute capability {}.{} device",
            cc.0, cc.1
        ))),
    }
}

/// [`compile_for_device`], remembered for the life of the process: every backend on a
/// device of the same compute capability reuses the image (NVRTC takes ~0.1-1 s a file).
pub fn compile_for_device_cached(k: &'static KernelSource, cc: (i32, i32)) -> Result<Image> {
    type Cache = Mutex<HashMap<(&'static str, (i32, i32)), Image>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (k.name, cc);
    if let Some(img) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(img);
    }
    let img = compile_for_device(k, cc)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, img.clone());
    }
    Ok(img)
}
