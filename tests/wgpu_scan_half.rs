//! The wgpu backend refuses f16/bf16 scan I/O with a typed error (its shaders read and
//! write f32), and still runs f32 I/O.
//!
//! Without an adapter the test prints "wgpu tests SKIPPED: ..." and passes, unless
//! `MAMBA_REQUIRE=wgpu` is set (lavapipe is enough).
#![cfg(feature = "wgpu")]

mod common;

use common::Tol;
use common::cases::{ScanCase, ScanData, St};
use common::checks::up_as;
use common::half_io::check_scan_io;
use mamba_gpu::ops::{self, ScanInputs, StateIo};
use mamba_gpu::wgpu::WgpuBackend;
use mamba_gpu::{CpuBackend, DType, Error};

fn backend() -> Option<WgpuBackend> {
    common::gpu::or_skip("wgpu", "wgpu tests", WgpuBackend::new())
}

#[test]
fn half_scan_io_is_a_typed_error() {
    let Some(be) = backend() else { return };
    let c = ScanCase {
        state: St::Final,
        ..ScanCase::full(2, 4, 9, 3)
    };
    let x = ScanData::new(&c);
    let (seq, bc) = (c.seq_shape(), c.bc_shape());
    for io in [DType::F16, DType::BF16] {
        let u = up_as(&be, &x.u, &seq, io);
        let delta = up_as(&be, &x.delta, &seq, io);
        let a = up_as(&be, &x.a, &[c.dim, c.dstate], DType::F32);
        let b = up_as(&be, &x.b, &bc, io);
        let cc = up_as(&be, &x.c, &bc, io);
        let mut state = up_as(&be, &x.h0, &c.state_shape(), DType::F32);
        let mut out = up_as(&be, &vec![0.0; seq.iter().product()], &seq, io);
        let inputs = ScanInputs {
            u: &u,
            delta: &delta,
            a: &a,
            b: &b,
            c: &cc,
            d: None,
            z: None,
            delta_bias: None,
            delta_softplus: true,
            layout: c.layout,
        };
        let e = ops::selective_scan(&be, &inputs, StateIo::Final(&mut state), &mut out)
            .expect_err("half scan I/O on wgpu must be refused");
        let Error::DType {
            op, tensor, got, ..
        } = &e
        else {
            panic!("{io:?} I/O on wgpu: expected Error::DType, got {e:?}");
        };
        assert_eq!((*op, *tensor, *got), ("selective_scan", "out", io), "{e}");
        eprintln!("{io:?}: {e}");
    }
}

/// f32 I/O through the same half-I/O test path (the refusal must not catch it).
#[test]
fn f32_scan_io_still_runs() {
    let Some(be) = backend() else { return };
    let c = ScanCase::full(2, 4, 33, 8);
    check_scan_io(&be, &CpuBackend::new(), &c, DType::F32, Tol::F32);
}
