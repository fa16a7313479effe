//! The kernels: one [`Kernel`] per shader entry point (and weight dtype), each with its
//! explicit binding list, and the include step that joins a shader module from the
//! files of `shaders/` ([`shader_source`]). Files are embedded with `include_str!` (no
//! file system at run time, so wasm32 works alike), each module is compiled once and
//! its pipelines are cached by [`Kernel`].

use crate::tensor::DType;

/// Selective scan: channels per workgroup where the adapter's limits allow it. More would
/// share nothing (B and C reach each channel through the cache) and only lengthen the
/// barriers; fewer are used when the adapter's invocation or workgroup-memory limits
/// demand it (see [`ScanSize::fit`]).
pub(crate) const SCAN_CHANNELS: u32 = 4;
/// Selective scan: time steps per chunk (`CHUNK` in the shaders).
pub(crate) const SCAN_CHUNK: u32 = 256;
/// Selective scan: one dispatch walks at most this many (chunk, state) pairs, i.e.
/// `SCAN_SEGMENT_STATE_CHUNKS / N` chunks; longer sequences are split on the host.
pub(crate) const SCAN_SEGMENT_STATE_CHUNKS: u32 = 2048;
/// Selective scan: invocations per channel (`LANES`); the subgroup path needs subgroup
/// sizes that divide it.
pub(crate) const SCAN_LANES: u32 = 64;
/// Selective scan, subgroup path: subgroup totals kept per channel (`MAX_WARPS`, LANES
/// divided by the smallest subgroup size supported, 4).
const SCAN_MAX_WARPS: u32 = 16;

/// How one scan pipeline is sized: `channels` per workgroup (`CH`, the workgroup is
/// `channels × SCAN_LANES` invocations) and `max_dstate` states carried per channel in
/// workgroup memory (`MAX_N`, a power of two ≥ dstate, so a few pipelines serve every N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ScanSize {
    pub channels: u32,
    pub max_dstate: u32,
}

/// The adapter limits the scan is sized from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanLimits {
    /// `max_compute_invocations_per_workgroup` and `max_compute_workgroup_size_x`, the
    /// smaller of the two.
    pub invocations: u32,
    /// `max_compute_workgroup_storage_size`, bytes.
    pub workgroup_bytes: u32,
}

impl ScanSize {
    /// 32-bit words of workgroup memory one channel needs: `carry` of
    /// `selective_scan.wgsl` (CARRY_COPIES × MAX_N) and the row scan's arrays of the half.
    fn words_per_channel(max_dstate: u32, subgroup: bool) -> u32 {
        if subgroup {
            2 * SCAN_MAX_WARPS + 2 * max_dstate // tot_a, tot_b; carry (two parities)
        } else {
            2 * SCAN_LANES + max_dstate // scan_a, scan_b; carry
        }
    }

    /// Bytes of workgroup memory this size declares.
    pub(crate) fn workgroup_bytes(self, subgroup: bool) -> u32 {
        4 * self.channels * Self::words_per_channel(self.max_dstate, subgroup)
    }

    /// The largest workgroup up to `preferred` channels that the limits allow for this
    /// dstate, or why there is none.
    pub(crate) fn fit(
        dstate: u32,
        preferred: u32,
        lim: ScanLimits,
        subgroup: bool,
    ) -> Result<ScanSize, String> {
        let max_dstate = dstate.max(1).next_power_of_two();
        let per_channel = 4 * Self::words_per_channel(max_dstate, subgroup);
        let by_invocations = lim.invocations / SCAN_LANES;
        let by_memory = lim.workgroup_bytes / per_channel;
        let channels = preferred.min(by_invocations).min(by_memory);
        if channels == 0 {
            return Err(format!(
                "dstate {dstate} needs {per_channel} bytes of workgroup memory and {SCAN_LANES} \
                 invocations per workgroup; the adapter allows {} bytes and {} invocations",
                lim.workgroup_bytes, lim.invocations
            ));
        }
        Ok(ScanSize {
            channels,
            max_dstate,
        })
    }
}
/// Matmul: the decode path serves up to this many rows of x (`MAX_M` in matmul.wgsl).
pub(crate) const DECODE_MAX_M: u32 = 8;
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
    SelectiveScan(ScanSize),
    /// The same scan with the subgroup row scan (`selective_scan/subgroup.wgsl`).
    SelectiveScanSubgroup(ScanSize),
    SelectiveStateUpdate,
    SsdScan,
    /// The chunked form of the same scan, for prefills (`ssd_scan_chunked`).
    SsdScanChunked,
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
    /// Q8_0 weights (`matmul_q8.wgsl`); `bias` the bias's storage.
    MatmulQ8 {
        bias: WDtype,
    },
    /// The same with the activations quantized to int8 (`matmul_q8_int8`).
    MatmulQ8Int8 {
        bias: WDtype,
    },
    RmsNorm {
        w: WDtype,
    },
    /// The fused decode step (`shaders/decode_step/`): `w` the projections, `norm` the
    /// norm weight.
    MixerIn {
        w: WDtype,
        norm: WDtype,
    },
    XProj {
        w: WDtype,
    },
    SsmStep {
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

/// One shader module, named by the file of `shaders/` it is joined from.
pub(crate) struct Shader {
    pub name: &'static str,
    /// Hot shader audited for in-bounds accesses and terminating loops: created without
    /// wgpu's runtime checks (see `WgpuOptions::checked_shaders`).
    pub trusted: bool,
}

macro_rules! files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../shaders/", $path)))),*]
    };
}

/// Every file of `shaders/`, by its path there (what an include line names).
const FILES: &[(&str, &str)] = files!(
    "common.wgsl",
    "argmax.wgsl",
    "causal_conv1d.wgsl",
    "copy.wgsl",
    "elementwise.wgsl",
    "embedding.wgsl",
    "decode_step.wgsl",
    "decode_step/mixer_in.wgsl",
    "decode_step/ssm_step.wgsl",
    "decode_step/x_proj.wgsl",
    "matmul.wgsl",
    "matmul_q8.wgsl",
    "rms_norm.wgsl",
    "selective_scan.wgsl",
    "selective_scan/shared.wgsl",
    "selective_scan/subgroup.wgsl",
    "selective_state_update.wgsl",
    "ssd_scan.wgsl",
);

/// The shader modules the backend builds (the files it starts joining from); every
/// [`Kernel`] uses one of them. For tests that translate or reflect every shader.
#[doc(hidden)]
pub const SHADERS: &[&str] = &[
    "argmax.wgsl",
    "causal_conv1d.wgsl",
    "copy.wgsl",
    "elementwise.wgsl",
    "decode_step/mixer_in.wgsl",
    "decode_step/ssm_step.wgsl",
    "decode_step/x_proj.wgsl",
    "embedding.wgsl",
    "matmul.wgsl",
    "matmul_q8.wgsl",
    "rms_norm.wgsl",
    "selective_scan/shared.wgsl",
    "selective_scan/subgroup.wgsl",
    "selective_state_update.wgsl",
    "ssd_scan.wgsl",
];

/// What an include line looks like: `//#include "common.wgsl"` (a comment to WGSL
/// tools, so every file still reads as WGSL).
const INCLUDE: &str = "//#include ";

/// The WGSL of one shader module: the file `root` of `shaders/` with every
/// `//#include "<path>"` line replaced by that file (paths relative to `shaders/`),
/// recursively, each file at most once per module (WGSL declarations may come in any
/// order, so where a file lands does not matter). This is the one function that builds
/// shader sources: the backend compiles what it returns, and the naga tests validate and
/// translate the same text.
#[doc(hidden)]
pub fn shader_source(root: &str) -> Result<String, String> {
    fn file(path: &str) -> Result<&'static str, String> {
        FILES
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, src)| *src)
            .ok_or_else(|| format!("no shader file shaders/{path}"))
    }
    fn join(path: &str, done: &mut Vec<String>, out: &mut String) -> Result<(), String> {
        if done.iter().any(|d| d == path) {
            return Ok(());
        }
        done.push(path.to_string());
        out.push_str(&format!("// ---- shaders/{path} ----\n"));
        for line in file(path)?.lines() {
            match line.trim().strip_prefix(INCLUDE) {
                Some(arg) => {
                    let inner = arg
                        .trim()
                        .strip_prefix('"')
                        .and_then(|a| a.strip_suffix('"'))
                        .ok_or_else(|| format!("shaders/{path}: bad include line `{line}`"))?;
                    join(inner, done, out)?;
                    out.push_str(&format!("// ---- shaders/{path}, continued ----\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Ok(())
    }
    let mut out = String::new();
    join(root, &mut Vec::new(), &mut out)?;
    Ok(out)
}

macro_rules! shader {
    ($name:literal) => {
        shader!($name, false)
    };
    ($name:literal, $trusted:literal) => {
        Shader {
            name: $name,
            trusted: $trusted,
        }
    };
}

impl Kernel {
    pub(crate) fn shader(self) -> Shader {
        match self {
            Kernel::SelectiveScan(_) => shader!("selective_scan/shared.wgsl", true),
            Kernel::SelectiveScanSubgroup(_) => shader!("selective_scan/subgroup.wgsl", true),
            Kernel::SelectiveStateUpdate => shader!("selective_state_update.wgsl"),
            Kernel::SsdScan | Kernel::SsdScanChunked => shader!("ssd_scan.wgsl"),
            Kernel::CausalConv1d | Kernel::CausalConv1dState | Kernel::CausalConv1dUpdate => {
                shader!("causal_conv1d.wgsl")
            }
            Kernel::Matmul { .. } | Kernel::MatmulDecode { .. } => shader!("matmul.wgsl", true),
            Kernel::MatmulQ8 { .. } | Kernel::MatmulQ8Int8 { .. } => shader!("matmul_q8.wgsl"),
            Kernel::RmsNorm { .. } => shader!("rms_norm.wgsl"),
            Kernel::MixerIn { .. } => shader!("decode_step/mixer_in.wgsl"),
            Kernel::XProj { .. } => shader!("decode_step/x_proj.wgsl"),
            Kernel::SsmStep { .. } => shader!("decode_step/ssm_step.wgsl"),
            Kernel::Embedding { .. } => shader!("embedding.wgsl"),
            Kernel::Elementwise => shader!("elementwise.wgsl"),
            Kernel::Argmax => shader!("argmax.wgsl"),
            Kernel::Copy => shader!("copy.wgsl"),
        }
    }

    pub(crate) fn entry(self) -> &'static str {
        match self {
            Kernel::SelectiveScan(_) | Kernel::SelectiveScanSubgroup(_) => "selective_scan",
            Kernel::SelectiveStateUpdate => "selective_state_update",
            Kernel::SsdScan => "ssd_scan",
            Kernel::SsdScanChunked => "ssd_scan_chunked",
            Kernel::CausalConv1d => "causal_conv1d",
            Kernel::CausalConv1dState => "causal_conv1d_state",
            Kernel::CausalConv1dUpdate => "causal_conv1d_update",
            Kernel::Matmul { .. } => "matmul",
            Kernel::MatmulDecode { .. } => "matmul_decode",
            Kernel::MatmulQ8 { .. } => "matmul_q8",
            Kernel::MatmulQ8Int8 { .. } => "matmul_q8_int8",
            Kernel::RmsNorm { .. } => "rms_norm",
            Kernel::MixerIn { .. } => "mixer_in",
            Kernel::XProj { .. } => "x_proj",
            Kernel::SsmStep { .. } => "ssm_step",
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
            Kernel::SelectiveScan(_) | Kernel::SelectiveScanSubgroup(_) => {
                &[U, R, R, R, R, R, R, R, R, W, W]
            }
            // params, x, dt, A, B, C, D, z, dt_bias, state, out
            Kernel::SelectiveStateUpdate => &[U, R, R, R, R, R, R, R, R, W, W],
            // params, x, dt, A, B, C, D, z, dt_bias, state, out
            Kernel::SsdScan | Kernel::SsdScanChunked => &[U, R, R, R, R, R, R, R, R, W, W],
            // params, x, weight, bias, conv_state, out
            Kernel::CausalConv1d | Kernel::CausalConv1dState | Kernel::CausalConv1dUpdate => {
                &[U, R, R, R, W, W]
            }
            // params, x, w, bias, out, window, w_hi
            Kernel::Matmul { .. } | Kernel::MatmulDecode { .. } => &[U, R, R, R, W, U, R],
            // params, x, q, d, bias, out
            Kernel::MatmulQ8 { .. } | Kernel::MatmulQ8Int8 { .. } => &[U, R, R, R, R, W],
            // params, x, weight, residual, out
            Kernel::RmsNorm { .. } => &[U, R, R, W, W],
            // params, h, norm_w, w_x, w_z, conv_w, conv_b, conv_state, xc, z
            Kernel::MixerIn { .. } => &[U, R, R, R, R, R, R, W, W, W],
            // params, xc, w_dt, w_b, w_c, dbc
            Kernel::XProj { .. } => &[U, R, R, R, R, W],
            // params, xc, dbc, z, dt_proj, dt_bias, A, D, state, y
            Kernel::SsmStep { .. } => &[U, R, R, R, R, R, R, R, W, W],
            // params, ids, table, out, window, table_hi
            Kernel::Embedding { .. } => &[U, R, R, W, U, R],
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
            Kernel::SelectiveScan(s) | Kernel::SelectiveScanSubgroup(s) => {
                vec![("CH", s.channels as f64), ("MAX_N", s.max_dstate as f64)]
            }
            Kernel::Matmul { w, bias } | Kernel::MatmulDecode { w, bias } => vec![
                ("W_DTYPE", w as u32 as f64),
                ("BIAS_DTYPE", bias as u32 as f64),
            ],
            Kernel::MatmulQ8 { bias } | Kernel::MatmulQ8Int8 { bias } => {
                vec![("BIAS_DTYPE", bias as u32 as f64)]
            }
            Kernel::RmsNorm { w }
            | Kernel::Embedding { w }
            | Kernel::XProj { w }
            | Kernel::SsmStep { w } => vec![("W_DTYPE", w as u32 as f64)],
            Kernel::MixerIn { w, norm } => vec![
                ("W_DTYPE", w as u32 as f64),
                ("NORM_DTYPE", norm as u32 as f64),
            ],
            _ => Vec::new(),
        }
    }
}

/// One compute pipeline as [`WgpuBackend`](super::WgpuBackend) builds it: the WGSL it
/// compiles, the entry point, the bind group layout and the override constants. Not an
/// API: it exists so that tests/shaders_naga.rs translates exactly the shaders the backend
/// creates (through [`Kernel::shader`], whatever joins their source), not the files.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct PipelineSource {
    /// The `Kernel`, as `Debug` prints it (for messages).
    pub kernel: String,
    pub file: &'static str,
    pub source: String,
    pub entry: &'static str,
    /// Binding kinds in binding order, as the bind group layout declares them:
    /// `"uniform"`, `"storage read"` or `"storage read_write"`.
    pub bindings: Vec<&'static str>,
    pub constants: Vec<(&'static str, f64)>,
    /// Created with wgpu's runtime checks off unless `WgpuOptions::checked_shaders`.
    pub trusted: bool,
    /// Needs `Features::SUBGROUP` (the subgroup scan).
    pub subgroups: bool,
    /// Workgroup memory the host sized this pipeline for (`ScanSize::workgroup_bytes`;
    /// the scan only).
    pub workgroup_bytes: Option<u32>,
}

/// Every pipeline the backend can create, with the scan sized by [`ScanSize::fit`] for each
/// of `scan_dstates` on an adapter with these limits (both scan variants), or the first
/// size that does not fit. Not an API: see [`PipelineSource`].
#[doc(hidden)]
pub fn pipeline_sources(
    scan_dstates: &[u32],
    scan_channels: u32,
    invocations: u32,
    workgroup_bytes: u32,
) -> Result<Vec<PipelineSource>, String> {
    const W: [WDtype; 3] = [WDtype::F32, WDtype::F16, WDtype::BF16];
    let lim = ScanLimits {
        invocations,
        workgroup_bytes,
    };
    let mut kernels = Vec::new();
    for &n in scan_dstates {
        kernels.push(Kernel::SelectiveScan(ScanSize::fit(
            n,
            scan_channels,
            lim,
            false,
        )?));
        kernels.push(Kernel::SelectiveScanSubgroup(ScanSize::fit(
            n,
            scan_channels,
            lim,
            true,
        )?));
    }
    kernels.extend([
        Kernel::SelectiveStateUpdate,
        Kernel::SsdScan,
        Kernel::SsdScanChunked,
        Kernel::CausalConv1d,
        Kernel::CausalConv1dState,
        Kernel::CausalConv1dUpdate,
        Kernel::Elementwise,
        Kernel::Argmax,
        Kernel::Copy,
    ]);
    for w in W {
        kernels.extend([
            Kernel::RmsNorm { w },
            Kernel::Embedding { w },
            Kernel::XProj { w },
            Kernel::SsmStep { w },
        ]);
        for norm in W {
            kernels.push(Kernel::MixerIn { w, norm });
        }
        for bias in W {
            kernels.extend([Kernel::Matmul { w, bias }, Kernel::MatmulDecode { w, bias }]);
        }
        kernels.extend([
            Kernel::MatmulQ8 { bias: w },
            Kernel::MatmulQ8Int8 { bias: w },
        ]);
    }
    // A new `Kernel` variant fails to compile here until it is listed above.
    let listed = |k: Kernel| match k {
        Kernel::SelectiveScan(_)
        | Kernel::SelectiveScanSubgroup(_)
        | Kernel::SelectiveStateUpdate
        | Kernel::SsdScan
        | Kernel::SsdScanChunked
        | Kernel::CausalConv1d
        | Kernel::CausalConv1dState
        | Kernel::CausalConv1dUpdate
        | Kernel::Matmul { .. }
        | Kernel::MatmulDecode { .. }
        | Kernel::MatmulQ8 { .. }
        | Kernel::MatmulQ8Int8 { .. }
        | Kernel::RmsNorm { .. }
        | Kernel::MixerIn { .. }
        | Kernel::XProj { .. }
        | Kernel::SsmStep { .. }
        | Kernel::Embedding { .. }
        | Kernel::Elementwise
        | Kernel::Argmax
        | Kernel::Copy => (),
    };
    kernels
        .into_iter()
        .inspect(|&k| listed(k))
        .map(|k| {
            let shader = k.shader();
            Ok(PipelineSource {
                kernel: format!("{k:?}"),
                file: shader.name,
                source: shader_source(shader.name)?,
                entry: k.entry(),
                bindings: k
                    .slots()
                    .iter()
                    .map(|s| match s {
                        Slot::Uniform => "uniform",
                        Slot::Read => "storage read",
                        Slot::ReadWrite => "storage read_write",
                    })
                    .collect(),
                constants: k.constants(),
                trusted: shader.trusted,
                subgroups: matches!(k, Kernel::SelectiveScanSubgroup(_)),
                workgroup_bytes: match k {
                    Kernel::SelectiveScan(s) => Some(s.workgroup_bytes(false)),
                    Kernel::SelectiveScanSubgroup(s) => Some(s.workgroup_bytes(true)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// Size and `(field, offset)`s of the host's `WindowParams` (private to `window.rs`), for
/// the layout check in tests/shaders_naga.rs. Not an API.
#[doc(hidden)]
pub fn window_params_layout() -> (usize, Vec<(&'static str, usize)>) {
    use super::window::WindowParams as P;
    use std::mem::{offset_of, size_of};
    (
        size_of::<P>(),
        vec![
            ("row0", offset_of!(P, row0)),
            ("rows", offset_of!(P, rows)),
            ("w_off", offset_of!(P, w_off)),
            ("last", offset_of!(P, last)),
            ("rows_a", offset_of!(P, rows_a)),
            ("w_off_b", offset_of!(P, w_off_b)),
            ("_pad0", offset_of!(P, _pad0)),
            ("_pad1", offset_of!(P, _pad1)),
        ],
    )
}

#[cfg(test)]
mod tests;
