//! Mamba-2 through the general scan: the path a backend without the head-form scan
//! (`Backend::has_ssd_scan() == false`, e.g. a third-party backend) takes, with the
//! per-head values spread over the channels at load. Every backend of this crate has
//! `ssd_scan`, so a wrapper around the CPU backend that hides it runs the fixtures here
//! (all families; Mamba-1 and Falcon-Mamba do not use it and must be unchanged).

mod common;

use common::model_fixtures::check_model_fixtures;
use mamba_gpu::ops::call::*;
use mamba_gpu::{Backend, CpuBackend, CpuBuffer, DType, HostSlice, HostVec, Result};

/// The CPU backend without `ssd_scan`.
struct NoSsd(CpuBackend);

impl Backend for NoSsd {
    type Buffer = CpuBuffer;
    fn name(&self) -> &'static str {
        "cpu-no-ssd"
    }
    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        self.0.supports_weight_dtype(dtype)
    }
    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<CpuBuffer> {
        self.0.zeros(dtype, shape)
    }
    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<CpuBuffer> {
        self.0.upload(data, shape)
    }
    fn write(&self, data: HostSlice<'_>, buf: &mut CpuBuffer) -> Result<()> {
        self.0.write(data, buf)
    }
    fn download(&self, buf: &CpuBuffer) -> Result<HostVec> {
        self.0.download(buf)
    }
    fn flush(&self) -> Result<()> {
        self.0.flush()
    }
    fn embedding(&self, call: EmbeddingCall<'_, CpuBuffer>) -> Result<()> {
        self.0.embedding(call)
    }
    fn matmul(&self, call: MatmulCall<'_, CpuBuffer>) -> Result<()> {
        self.0.matmul(call)
    }
    fn rms_norm(&self, call: NormCall<'_, CpuBuffer>) -> Result<()> {
        self.0.rms_norm(call)
    }
    fn causal_conv1d(&self, call: ConvCall<'_, CpuBuffer>) -> Result<()> {
        self.0.causal_conv1d(call)
    }
    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, CpuBuffer>) -> Result<()> {
        self.0.causal_conv1d_update(call)
    }
    fn selective_scan(&self, call: ScanCall<'_, CpuBuffer>) -> Result<()> {
        self.0.selective_scan(call)
    }
    fn selective_state_update(&self, call: StepCall<'_, CpuBuffer>) -> Result<()> {
        self.0.selective_state_update(call)
    }
    fn elementwise(&self, call: ElementwiseCall<'_, CpuBuffer>) -> Result<()> {
        self.0.elementwise(call)
    }
    fn argmax(&self, call: ArgmaxCall<'_, CpuBuffer>) -> Result<()> {
        self.0.argmax(call)
    }
    fn copy(&self, call: CopyCall<'_, CpuBuffer>) -> Result<()> {
        self.0.copy(call)
    }
}

#[test]
fn fixtures_through_the_general_scan() {
    let reports = check_model_fixtures(&NoSsd(CpuBackend::new()));
    assert!(reports.iter().any(|r| r.name.starts_with("mamba2")));
    for r in reports {
        assert!(r.worst_rel_l2 <= 1e-4, "{r:?}");
    }
}

#[test]
fn a_backend_without_ssd_scan_refuses_it() {
    use mamba_gpu::ops::{self, SsdInputs, StateIo};
    let be = NoSsd(CpuBackend::new());
    let up = |v: &[f32], s: &[usize]| be.upload(HostSlice::F32(v), s).unwrap();
    let (x, dt, a) = (
        up(&[1.0; 4], &[1, 2, 2]),
        up(&[0.5; 2], &[1, 2, 1]),
        up(&[-1.0], &[1]),
    );
    let bc = up(&[1.0; 2], &[1, 2, 1]);
    let mut out = be.zeros(DType::F32, &[1, 2, 2]).unwrap();
    let i = SsdInputs {
        x: &x,
        dt: &dt,
        a: &a,
        b: &bc,
        c: &bc,
        d: None,
        z: None,
        dt_bias: None,
        dt_softplus: true,
        head_dim: 2,
    };
    let e = ops::ssd_scan(&be, &i, StateIo::None, &mut out).unwrap_err();
    assert!(
        matches!(e, mamba_gpu::Error::Limit { op: "ssd_scan", .. }),
        "{e}"
    );
}
