//! The kernels: one [`Kernel`] per shader entry point (and weight dtype), each with its
//! explicit binding list. Shader files are embedded with `include_str!`, compiled once,
//! and their pipelines cached by [`Kernel`].

use crate::tensor::DType;

/// Selective scan: channels per workgroup. Keep in sync with `CH` in
/// `shaders/selective_scan*.wgsl`.
pub(crate) const SCAN_CHANNELS: u32 = 4;
/// Selective scan: time steps per chunk (`CHUNK` in the shaders).
pub(crate) const SCAN_CHUNK: u32 = 256;
/// Selective scan: one dispatch walks at most this many (chunk, state) pairs, i.e.
/// `SCAN_SEGMENT_STATE_CHUNKS / N` chunks; longer sequences are split on the host.
pub(crate) const SCAN_SEGMENT_STATE_CHUNKS: u32 = 2048;
/// Selective scan: invocations per channel (`LANES`); the subgroup path needs subgroup
/// sizes that divide it.
pub(crate) const SCAN_LANES: u32 = 64;
/// Selective scan: largest dstate (`MAX_N`, sizes the carried state in workgroup memory).
pub(crate) const SCAN_MAX_DSTATE: u32 = 256;
/// Matmul: the decode path serves up to this many rows of x (`MAX_M` in matmul.wgsl).
pub(crate) const DECODE_MAX_M: u32 = 4;
/// Matmul decode: weight rows per workgroup (`DEC_ROWS`).
pub(crate) const DECODE_ROWS: u32 = 8;
/// Matmul tiled: output tile edge (`TILE`).
pub(crate) const MATMUL_TILE: u32 = 64;

/// Weight storage as the shaders decode it (`W_DTYPE` / `BIAS_DTYPE` override codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WDtype {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
}

impl WDtype {
    pub(crate) fn of(d: DType) -> WDtype {
        match d {
            DType::F16 => WDtype::F16,
            DType::BF16 => WDtype::BF16,
            _ => WDtype::F32,
        }
    }
}

/// One compute pipeline. Named like the CPU function and the shader entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    SelectiveScan,
    /// The same scan with subgroup shuffles (`selective_scan_subgroup.wgsl`).
    SelectiveScanSubgroup,
    SelectiveStateUpdate,
    CausalConv1d,
    CausalConv1dState,
    CausalConv1dUpdate,
    Matmul {
        w: WDtype,
        bias: WDtype,
    },
    MatmulDecode {
        w: WDtype,
        bias: WDtype,
    },
    RmsNorm {
        w: WDtype,
    },
    Embedding {
        w: WDtype,
    },
    Elementwise,
    Argmax,
    Copy,
}

/// What a binding slot holds, in binding order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

use Slot::{Read as R, ReadWrite as W, Uniform as U};

/// A shader file.
pub(crate) struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    /// Hot shader audited for in-bounds accesses and terminating loops: created without
    /// wgpu's runtime checks (see `WgpuOptions::checked_shaders`).
    pub trusted: bool,
}

macro_rules! shader {
    ($name:literal) => {
        shader!($name, false)
    };
    ($name:literal, $trusted:literal) => {
        Shader {
            name: $name,
            source: include_str!(concat!("../../shaders/", $name)),
            trusted: $trusted,
        }
    };
}

impl Kernel {
    pub(crate) fn shader(self) -> Shader {
        match self {
            Kernel::SelectiveScan => shader!("selective_scan.wgsl", true),
            Kernel::SelectiveScanSubgroup => shader!("selective_scan_subgroup.wgsl", true),
            Kernel::SelectiveStateUpdate => shader!("selective_state_update.wgsl"),
            Kernel::CausalConv1d | Kernel::CausalConv1dState | Kernel::CausalConv1dUpdate => {
                shader!("causal_conv1d.wgsl")
            }
            Kernel::Matmul { .. } | Kernel::MatmulDecode { .. } => shader!("matmul.wgsl", true),
            Kernel::RmsNorm { .. } => shader!("rms_norm.wgsl"),
            Kernel::Embedding { .. } => shader!("embedding.wgsl"),
            Kernel::Elementwise => shader!("elementwise.wgsl"),
            Kernel::Argmax => shader!("argmax.wgsl"),
            Kernel::Copy => shader!("copy.wgsl"),
        }
    }

    pub(crate) fn entry(self) -> &'static str {
        match self {
            Kernel::SelectiveScan | Kernel::SelectiveScanSubgroup => "selective_scan",
            Kernel::SelectiveStateUpdate => "selective_state_update",
            Kernel::CausalConv1d => "causal_conv1d",
            Kernel::CausalConv1dState => "causal_conv1d_state",
            Kernel::CausalConv1dUpdate => "causal_conv1d_update",
            Kernel::Matmul { .. } => "matmul",
            Kernel::MatmulDecode { .. } => "matmul_decode",
            Kernel::RmsNorm { .. } => "rms_norm",
            Kernel::Embedding { .. } => "embedding",
            Kernel::Elementwise => "elementwise",
            Kernel::Argmax => "argmax",
            Kernel::Copy => "copy",
        }
    }

    /// The binding list, mirroring the `@binding`s of the shader (see the comments there).
    pub(crate) fn slots(self) -> &'static [Slot] {
        match self {
            // params, u, delta, A, B, C, D, z, delta_bias, state, out
            Kernel::SelectiveScan | Kernel::SelectiveScanSubgroup => {
                &[U, R, R, R, R, R, R, R, R, W, W]
            }
            // params, x, dt, A, B, C, D, z, dt_bias, state, out
            Kernel::SelectiveStateUpdate => &[U, R, R, R, R, R, R, R, R, W, W],
            // params, x, weight, bias, conv_state, out
            Kernel::CausalConv1d | Kernel::CausalConv1dState | Kernel::CausalConv1dUpdate => {
                &[U, R, R, R, W, W]
            }
            // params, x, w, bias, out, window
            Kernel::Matmul { .. } | Kernel::MatmulDecode { .. } => &[U, R, R, R, W, U],
            // params, x, weight, residual, out
            Kernel::RmsNorm { .. } => &[U, R, R, W, W],
            // params, ids, table, out, window
            Kernel::Embedding { .. } => &[U, R, R, W, U],
            // params, a, b, out
            Kernel::Elementwise => &[U, R, R, W],
            // params, x, out
            Kernel::Argmax => &[U, R, W],
            // params, src, dst
            Kernel::Copy => &[U, R, W],
        }
    }

    /// Pipeline-overridable constants.
    pub(crate) fn constants(self) -> Vec<(&'static str, f64)> {
        match self {
            Kernel::Matmul { w, bias } | Kernel::MatmulDecode { w, bias } => vec![
                ("W_DTYPE", w as u32 as f64),
                ("BIAS_DTYPE", bias as u32 as f64),
            ],
            Kernel::RmsNorm { w } | Kernel::Embedding { w } => {
                vec![("W_DTYPE", w as u32 as f64)]
            }
            _ => Vec::new(),
        }
    }
}
