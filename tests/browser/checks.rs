//! The op checks of `tests/common/checks.rs`, awaiting their read-backs: each runs an op
//! on the WebGPU backend and on the CPU reference (in the same wasm binary) with the same
//! seeded inputs and compares. Outputs start as NaN, so an unwritten element fails.
//! Inputs come from `tests/common/cases.rs`; the tolerance is the suite's (`Tol::F32`).

use std::sync::atomic::{AtomicBool, Ordering};

use mamba_gpu::model::browser::AsyncDownload;
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo, StepInputs};
use mamba_gpu::wgpu::WgpuBackend;
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice};

use super::cases::{Gen, ScanCase, ScanData, St};

/// `|x − y| ≤ max(rel·(|x| + |y|), abs)` per element (as `tests/common/mod.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub rel: f32,
    pub abs: f32,
}

impl Tol {
    pub const F32: Tol = Tol {
        rel: 1e-4,
        abs: 1e-4,
    };
}

/// Asserts every element is within `tol` (NaN never is), naming the first offenders.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<(usize, f32, f32)> = got
        .iter()
        .zip(want)
        .enumerate()
        // Written so that NaN (a poisoned, unwritten element) counts as bad.
        .filter(|(_, (g, w))| {
            let within = (**g - **w).abs() <= (tol.rel * (g.abs() + w.abs())).max(tol.abs);
            !within
        })
        .map(|(i, (g, w))| (i, *g, *w))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} elements out of tolerance {tol:?}; first: {:?}",
        bad.len(),
        got.len(),
        &bad[..bad.len().min(5)]
    );
}

/// A line in the test output (the browser console, which the runner prints).
pub fn log(line: &str) {
    web_sys::console::log_1(&line.into());
}

/// Milliseconds from the page's clock (`std::time::Instant` panics on wasm32).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// The WebGPU backend. No adapter fails the test (never a skip); the adapter is logged
/// once per test binary.
pub async fn gpu() -> WgpuBackend {
    static SAID: AtomicBool = AtomicBool::new(false);
    let be = WgpuBackend::new_async()
        .await
        .unwrap_or_else(|e| panic!("no WebGPU adapter in this browser: {e}"));
    if !SAID.swap(true, Ordering::Relaxed) {
        log(&format!(
            "navigator.gpu adapter info: {}",
            js_adapter_info().await
        ));
        let i = be.adapter_info();
        let l = &be.device().limits();
        log(&format!(
            "WebGPU adapter: name {:?}, vendor {:?}, device {:?}, driver {:?} {:?}, {:?}, \
             type {:?}; subgroup sizes {}..{}, features {:?}; invocations/workgroup {}, \
             workgroup storage {} B, storage buffers/stage {}, max binding {} B",
            i.name,
            i.vendor,
            i.device,
            i.driver,
            i.driver_info,
            i.backend,
            i.device_type,
            i.subgroup_min_size,
            i.subgroup_max_size,
            be.device().features(),
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_storage_size,
            l.max_storage_buffers_per_shader_stage,
            l.max_storage_buffer_binding_size,
        ));
    }
    be
}

/// The adapter's `GPUAdapterInfo` as JavaScript sees it (wgpu's WebGPU backend leaves
/// `AdapterInfo`'s strings empty): vendor, architecture, device, description, subgroup
/// sizes, whether it is a fallback adapter.
async fn js_adapter_info() -> String {
    use wasm_bindgen::JsValue;
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).unwrap_or(JsValue::NULL);
    let Some(window) = web_sys::window() else {
        return "no window".into();
    };
    let gpu = get(&window.navigator().into(), "gpu");
    let Ok(request) = js_sys::Reflect::get(&gpu, &"requestAdapter".into())
        .and_then(|f| js_sys::Function::from(f).call0(&gpu))
    else {
        return "navigator.gpu.requestAdapter is missing".into();
    };
    let adapter = match wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(request)).await {
        Ok(a) if !a.is_null() => a,
        other => return format!("requestAdapter gave {other:?}"),
    };
    let info = get(&adapter, "info");
    let mut parts: Vec<String> = [
        "vendor",
        "architecture",
        "device",
        "description",
        "subgroupMinSize",
        "subgroupMaxSize",
        "isFallbackAdapter",
    ]
    .iter()
    .map(|k| format!("{k} {:?}", get(&info, k)))
    .collect();
    let features = get(&adapter, "features");
    if let Ok(values) = js_sys::Reflect::get(&features, &"values".into())
        .and_then(|f| js_sys::Function::from(f).call0(&features))
    {
        let names: Vec<String> = js_sys::Array::from(&values)
            .iter()
            .filter_map(|v| v.as_string())
            .collect();
        parts.push(format!("features offered to JS {names:?}"));
    }
    parts.join(", ")
}

fn up<B: Backend>(be: &B, v: &[f32], shape: &[usize]) -> B::Buffer {
    be.upload(HostSlice::F32(v), shape).expect("upload")
}

fn up_as<B: Backend>(be: &B, v: &[f32], shape: &[usize], dtype: DType) -> B::Buffer {
    match dtype {
        DType::F16 => {
            let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            be.upload(HostSlice::F16(&h), shape).expect("upload")
        }
        DType::BF16 => {
            let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
            be.upload(HostSlice::BF16(&h), shape).expect("upload")
        }
        _ => up(be, v, shape),
    }
}

fn poison<B: Backend>(be: &B, shape: &[usize]) -> B::Buffer {
    up(be, &vec![f32::NAN; shape.iter().product()], shape)
}

async fn down<B: AsyncDownload>(be: &B, b: &B::Buffer) -> Vec<f32> {
    be.download_async(b).await.expect("download").to_f32()
}

fn state_io<B>(st: St, state: Option<&mut B>) -> StateIo<'_, B> {
    match (st, state) {
        (St::Carry, Some(s)) => StateIo::Carry(s),
        (St::Final, Some(s)) => StateIo::Final(s),
        _ => StateIo::None,
    }
}

async fn run_scan<B: AsyncDownload>(be: &B, c: &ScanCase) -> (Vec<f32>, Option<Vec<f32>>) {
    let x = ScanData::new(c);
    let (seq, bc) = (c.seq_shape(), c.bc_shape());
    let (u, delta) = (up(be, &x.u, &seq), up(be, &x.delta, &seq));
    let a = up(be, &x.a, &[c.dim, c.dstate]);
    let (b, cc) = (up(be, &x.b, &bc), up(be, &x.c, &bc));
    let d = x.d.as_ref().map(|v| up(be, v, &[c.dim]));
    let z = x.z.as_ref().map(|v| up(be, v, &seq));
    let db = x.delta_bias.as_ref().map(|v| up(be, v, &[c.dim]));
    let inputs = ScanInputs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &cc,
        d: d.as_ref(),
        z: z.as_ref(),
        delta_bias: db.as_ref(),
        delta_softplus: c.softplus,
        layout: c.layout,
    };
    let mut out = poison(be, &seq);
    let mut state = match c.state {
        St::Carry => Some(up(be, &x.h0, &c.state_shape())),
        St::Final => Some(poison(be, &c.state_shape())),
        St::None => None,
    };
    ops::selective_scan(be, &inputs, state_io(c.state, state.as_mut()), &mut out)
        .expect("selective_scan");
    let st = match &state {
        Some(s) => Some(down(be, s).await),
        None => None,
    };
    (down(be, &out).await, st)
}

pub async fn check_scan(be: &WgpuBackend, c: &ScanCase, tol: Tol) {
    let (out, st) = run_scan(be, c).await;
    let (want, want_st) = run_scan(&CpuBackend::new(), c).await;
    assert_close(&format!("scan out {c:?}"), &out, &want, tol);
    if let (Some(s), Some(w)) = (st, want_st) {
        assert_close(&format!("scan state {c:?}"), &s, &w, tol);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StepCase {
    pub batch: usize,
    pub dim: usize,
    pub dstate: usize,
    /// 0: B/C as (batch, N); g > 0: (batch, g, N).
    pub groups: usize,
    pub d: bool,
    pub z: bool,
    pub dt_bias: bool,
    pub softplus: bool,
    pub seed: u64,
}

async fn run_step<B: AsyncDownload>(be: &B, c: &StepCase) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gen::new(c.seed);
    let (bt, dim, n) = (c.batch, c.dim, c.dstate);
    let bc_shape = if c.groups == 0 {
        vec![bt, n]
    } else {
        vec![bt, c.groups, n]
    };
    let nbc: usize = bc_shape.iter().product();
    let x = up(be, &g.normal(bt * dim), &[bt, dim]);
    let dt = up(be, &g.uniform(bt * dim, 0.0, 0.5), &[bt, dim]);
    let a = up(be, &g.uniform(dim * n, -0.5, 0.0), &[dim, n]);
    let b = up(be, &g.normal(nbc), &bc_shape);
    let cc = up(be, &g.normal(nbc), &bc_shape);
    let (dv, zv, bv) = (g.normal(dim), g.normal(bt * dim), g.uniform(dim, 0.0, 0.5));
    let d = c.d.then(|| up(be, &dv, &[dim]));
    let z = c.z.then(|| up(be, &zv, &[bt, dim]));
    let bias = c.dt_bias.then(|| up(be, &bv, &[dim]));
    let mut state = up(be, &g.normal(bt * dim * n), &[bt, dim, n]);
    let mut out = poison(be, &[bt, dim]);
    let inputs = StepInputs {
        x: &x,
        dt: &dt,
        a: &a,
        b: &b,
        c: &cc,
        d: d.as_ref(),
        z: z.as_ref(),
        dt_bias: bias.as_ref(),
        dt_softplus: c.softplus,
    };
    ops::selective_state_update(be, &inputs, &mut state, &mut out).expect("state update");
    (down(be, &out).await, down(be, &state).await)
}

pub async fn check_step(be: &WgpuBackend, c: &StepCase, tol: Tol) {
    let (out, st) = run_step(be, c).await;
    let (want, want_st) = run_step(&CpuBackend::new(), c).await;
    assert_close(&format!("step out {c:?}"), &out, &want, tol);
    assert_close(&format!("step state {c:?}"), &st, &want_st, tol);
}

#[derive(Debug, Clone, Copy)]
pub struct ConvCase {
    pub batch: usize,
    pub dim: usize,
    pub len: usize,
    pub width: usize,
    pub bias: bool,
    pub silu: bool,
    pub layout: Layout,
    pub state: St,
    pub seed: u64,
}

async fn run_conv<B: AsyncDownload>(be: &B, c: &ConvCase) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut g = Gen::new(c.seed);
    let seq = match c.layout {
        Layout::ChannelMajor => vec![c.batch, c.dim, c.len],
        Layout::TokenMajor => vec![c.batch, c.len, c.dim],
    };
    let x = up(be, &g.normal(c.batch * c.dim * c.len), &seq);
    let w = up(be, &g.normal(c.dim * c.width), &[c.dim, c.width]);
    let bv = g.normal(c.dim);
    let bias = c.bias.then(|| up(be, &bv, &[c.dim]));
    let st_shape = [c.batch, c.dim, c.width - 1];
    let st0 = g.normal(st_shape.iter().product());
    let mut state = match c.state {
        St::Carry => Some(up(be, &st0, &st_shape)),
        St::Final => Some(poison(be, &st_shape)),
        St::None => None,
    };
    let mut out = poison(be, &seq);
    let io = state_io(c.state, state.as_mut());
    ops::causal_conv1d(be, &x, &w, bias.as_ref(), c.silu, c.layout, io, &mut out)
        .expect("causal_conv1d");
    let st = match &state {
        Some(s) => Some(down(be, s).await),
        None => None,
    };
    (down(be, &out).await, st)
}

async fn run_conv_update<B: AsyncDownload>(be: &B, c: &ConvCase) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gen::new(c.seed ^ 0x5eed);
    let x = up(be, &g.normal(c.batch * c.dim), &[c.batch, c.dim]);
    let w = up(be, &g.normal(c.dim * c.width), &[c.dim, c.width]);
    let bv = g.normal(c.dim);
    let bias = c.bias.then(|| up(be, &bv, &[c.dim]));
    let st_shape = [c.batch, c.dim, c.width - 1];
    let mut state = up(be, &g.normal(st_shape.iter().product()), &st_shape);
    let mut out = poison(be, &[c.batch, c.dim]);
    ops::causal_conv1d_update(be, &x, &w, bias.as_ref(), c.silu, &mut state, &mut out)
        .expect("conv update");
    (down(be, &out).await, down(be, &state).await)
}

pub async fn check_conv(be: &WgpuBackend, c: &ConvCase, tol: Tol) {
    let (out, st) = run_conv(be, c).await;
    let (want, want_st) = run_conv(&CpuBackend::new(), c).await;
    assert_close(&format!("conv out {c:?}"), &out, &want, tol);
    if let (Some(s), Some(w)) = (st, want_st) {
        assert_close(&format!("conv state {c:?}"), &s, &w, tol);
    }
}

pub async fn check_conv_update(be: &WgpuBackend, c: &ConvCase, tol: Tol) {
    let (out, st) = run_conv_update(be, c).await;
    let (want, want_st) = run_conv_update(&CpuBackend::new(), c).await;
    assert_close(&format!("conv update out {c:?}"), &out, &want, tol);
    assert_close(&format!("conv update state {c:?}"), &st, &want_st, tol);
}

async fn run_matmul<B: AsyncDownload>(
    be: &B,
    (m, n, k): (usize, usize, usize),
    bias: bool,
    wdtype: DType,
) -> Vec<f32> {
    let mut g = Gen::new((m * 7919 + n * 31 + k) as u64);
    let x = up(be, &g.normal(m * k), &[m, k]);
    let w = up_as(be, &g.normal(n * k), &[n, k], wdtype);
    let bv = g.normal(n);
    let b = bias.then(|| up_as(be, &bv, &[n], wdtype));
    let mut out = poison(be, &[m, n]);
    ops::matmul(be, &x, &w, b.as_ref(), &mut out).expect("matmul");
    down(be, &out).await
}

pub async fn check_matmul(
    be: &WgpuBackend,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    wdtype: DType,
    tol: Tol,
) {
    let got = run_matmul(be, (m, n, k), bias, wdtype).await;
    let want = run_matmul(&CpuBackend::new(), (m, n, k), bias, wdtype).await;
    assert_close(&format!("matmul {m}x{n}x{k} {wdtype:?}"), &got, &want, tol);
}

async fn run_rms_norm<B: AsyncDownload>(
    be: &B,
    rows: usize,
    dim: usize,
    residual: bool,
) -> (Vec<f32>, Vec<f32>) {
    let mut g = Gen::new((rows * 131 + dim) as u64);
    let x = up(be, &g.normal(rows * dim), &[rows, dim]);
    let w = up(be, &g.uniform(dim, 0.5, 1.5), &[dim]);
    let mut r = up(be, &g.normal(rows * dim), &[rows, dim]);
    let mut out = poison(be, &[rows, dim]);
    ops::rms_norm(be, &x, &w, 1e-5, residual.then_some(&mut r), &mut out).expect("rms_norm");
    (down(be, &out).await, down(be, &r).await)
}

pub async fn check_rms_norm(be: &WgpuBackend, rows: usize, dim: usize, residual: bool, tol: Tol) {
    let (o, r) = run_rms_norm(be, rows, dim, residual).await;
    let (wo, wr) = run_rms_norm(&CpuBackend::new(), rows, dim, residual).await;
    assert_close(&format!("rms_norm out {rows}x{dim}"), &o, &wo, tol);
    assert_close(&format!("rms_norm residual {rows}x{dim}"), &r, &wr, tol);
}

/// Mamba-2's head-form scan (`ops::ssd_scan`) then its grouped norm, on seeded inputs:
/// `(out, final state, normed out)`. L = 600 at N = 128 takes the chunked form
/// (`ssd_scan_chunked`, 19 chunks of 32 steps with the state carried between them).
async fn run_ssd<B: AsyncDownload>(
    be: &B,
    c: (usize, usize, usize, usize, usize, usize),
) -> [Vec<f32>; 3] {
    use mamba_gpu::ops::SsdInputs;
    let (batch, len, heads, head_dim, groups, n) = c;
    let e = heads * head_dim;
    let mut g = Gen::new((batch * 1000 + len * 7 + n) as u64);
    let x = up(be, &g.normal(batch * len * e), &[batch, len, e]);
    let dt = up(be, &g.normal(batch * len * heads), &[batch, len, heads]);
    let a = up(be, &g.uniform(heads, -2.0, -0.2), &[heads]);
    let bm = up(
        be,
        &g.normal(batch * len * groups * n),
        &[batch, len, groups, n],
    );
    let cm = up(
        be,
        &g.normal(batch * len * groups * n),
        &[batch, len, groups, n],
    );
    let d = up(be, &g.normal(heads), &[heads]);
    let z = up(be, &g.normal(batch * len * e), &[batch, len, e]);
    let bias = up(be, &g.uniform(heads, -1.0, 0.5), &[heads]);
    let mut state = up(be, &g.normal(batch * e * n), &[batch, e, n]);
    let mut out = poison(be, &[batch, len, e]);
    let inputs = SsdInputs {
        x: &x,
        dt: &dt,
        a: &a,
        b: &bm,
        c: &cm,
        d: Some(&d),
        z: Some(&z),
        dt_bias: Some(&bias),
        dt_softplus: true,
        head_dim,
    };
    ops::ssd_scan(be, &inputs, StateIo::Carry(&mut state), &mut out).expect("ssd_scan");
    let w = up(be, &g.uniform(e, 0.5, 1.5), &[e]);
    let mut normed = poison(be, &[batch, len, e]);
    ops::rms_norm_grouped(be, &out, &w, 1e-5, groups, &mut normed).expect("rms_norm_grouped");
    [
        down(be, &out).await,
        down(be, &state).await,
        down(be, &normed).await,
    ]
}

pub async fn check_ssd(be: &WgpuBackend, c: (usize, usize, usize, usize, usize, usize), tol: Tol) {
    let got = run_ssd(be, c).await;
    let want = run_ssd(&CpuBackend::new(), c).await;
    for (what, (g, w)) in ["ssd_scan out", "ssd_scan state", "rms_norm_grouped"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        assert_close(&format!("{what} {c:?}"), g, w, tol);
    }
}

async fn run_matmul_q8<B: AsyncDownload>(be: &B, (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    let mut g = Gen::new((m * 104_729 + n * 31 + k) as u64);
    let x = up(be, &g.normal(m * k), &[m, k]);
    let qm = mamba_gpu::quant::Q8Matrix::quantize(&g.normal(n * k), n, k).unwrap();
    let q = be.upload(HostSlice::U32(&qm.q), &[n, k / 4]).unwrap();
    let d = be.upload(HostSlice::F16(&qm.d), &[n, k / 32]).unwrap();
    let b = up(be, &g.normal(n), &[n]);
    let mut out = poison(be, &[m, n]);
    ops::matmul_q8(be, &x, &q, &d, Some(&b), &mut out).expect("matmul_q8");
    down(be, &out).await
}

/// `matmul_q8` with f32 activations (`matmul_q8`) and with int8 ones (`matmul_q8_int8`,
/// WGSL's `dot4I8Packed` through Tint) against the CPU in the same mode (its int8 mode
/// covers fewer than 8 rows of x, so the int8 cases keep m below 8).
pub async fn check_matmul_q8(
    be: &WgpuBackend,
    (m, n, k): (usize, usize, usize),
    int8: bool,
    tol: Tol,
) {
    use mamba_gpu::Q8Activations;
    let acts = if int8 {
        Q8Activations::Int8
    } else {
        Q8Activations::F32
    };
    assert!(!int8 || m < 8);
    let got = run_matmul_q8(be, (m, n, k)).await;
    let want = run_matmul_q8(&CpuBackend::new().with_q8_activations(acts), (m, n, k)).await;
    assert_close(&format!("matmul_q8 {m}x{n}x{k} {acts:?}"), &got, &want, tol);
}
