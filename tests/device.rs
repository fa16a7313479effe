//! `Device`, the run-time backend: a model on a `Device` is the model on the backend it
//! wraps, bit for bit (same kernels, same replays); a buffer of another backend is a
//! typed error naming the op and the tensor; `auto()` always gives a device and says
//! why it passed faster backends over.

mod common;

use common::decode_checks::{Trace, decode_alone, small_model};
use mamba_gpu::{
    Backend, CpuBackend, DType, Device, DeviceBuf, DeviceBuffer, Error, HostSlice, Precision, ops,
};

const PROMPTS: &[&[u32]] = &[&[1, 2, 3, 4, 5], &[9, 8, 7]];

/// Greedy ids and logits of 6 decode steps after a 2-sequence prefill, with the
/// prefill's logits first.
fn trace<B: Backend>(be: B, weights: DType) -> Trace {
    let m = small_model(be, 11, weights);
    decode_alone(&m, PROMPTS, 6)
}

fn assert_bit_identical(what: &str, got: &Trace, want: &Trace) {
    assert_eq!(got.len(), want.len(), "{what}: steps");
    for (i, ((gi, gl), (wi, wl))) in got.iter().zip(want).enumerate() {
        assert_eq!(gi, wi, "{what}: ids before step {i}");
        let gb: Vec<u32> = gl.iter().map(|x| x.to_bits()).collect();
        let wb: Vec<u32> = wl.iter().map(|x| x.to_bits()).collect();
        assert_eq!(gb, wb, "{what}: logits after step {i} differ in some bit");
    }
}

#[test]
fn cpu_device_is_the_cpu_backend_bit_for_bit() {
    for precision in [Precision::Fast, Precision::Exact] {
        let want = trace(CpuBackend::with_precision(precision), DType::F32);
        let got = trace(
            Device::Cpu(CpuBackend::with_precision(precision)),
            DType::F32,
        );
        assert!(want.iter().all(|(_, l)| l.iter().all(|x| x.is_finite())));
        assert_bit_identical(&format!("cpu {precision:?}"), &got, &want);
    }
    // Device::cpu() is the fast arithmetic, as models should run.
    let d = Device::cpu();
    assert_eq!(d.name(), "cpu");
    assert!(matches!(&d, Device::Cpu(b) if b.precision() == Precision::Fast));
    let info = d.describe();
    assert_eq!((info.backend, info.software), ("cpu", false));
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_device_is_the_wgpu_backend_bit_for_bit() {
    use mamba_gpu::WgpuBackend;
    let Some(direct) = common::gpu::or_skip("wgpu", "Device::wgpu test", WgpuBackend::new()) else {
        return;
    };
    let dev = Device::wgpu().expect("a second wgpu device on the adapter that just worked");
    let info = dev.describe();
    assert_eq!(info.backend, "wgpu");
    assert_eq!(info.name, direct.adapter_info().name);
    assert!(!info.api.is_empty(), "{info}");
    assert_eq!(
        info.software,
        direct.adapter_info().device_type == wgpu::DeviceType::Cpu
    );
    let want = trace(&direct, DType::F32);
    let got = trace(&dev, DType::F32);
    assert_bit_identical("wgpu", &got, &want);
    let want = trace(&direct, DType::BF16);
    let got = trace(&dev, DType::BF16);
    assert_bit_identical("wgpu bf16 weights", &got, &want);

    // A CPU buffer handed to the wgpu device: a typed error naming op and tensor.
    let cpu = Device::cpu();
    let x = cpu.upload(HostSlice::F32(&[1.0; 4]), &[1, 4]).unwrap();
    let w = dev.upload(HostSlice::F32(&[1.0; 8]), &[2, 4]).unwrap();
    let mut out = dev.zeros(DType::F32, &[1, 2]).unwrap();
    let e = ops::matmul(&dev, &x, &w, None, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongDevice {
                op: "matmul",
                tensor: "x",
                got: "cpu",
                expected: "wgpu"
            }
        ),
        "{e:?}"
    );
    let e = dev.download(&x).unwrap_err();
    assert!(
        matches!(e, Error::WrongDevice { op: "download", .. }),
        "{e:?}"
    );
}

/// Every op of the CPU device refuses a buffer it does not hold, by name, never a panic:
/// here the buffers are of a second (wgpu) device where one exists; without wgpu there
/// is only one kind of buffer and nothing to mismatch.
#[cfg(feature = "wgpu")]
#[test]
fn cpu_device_names_the_foreign_tensor() {
    let Some(gpu) = common::gpu::or_skip("wgpu", "Device mismatch test", Device::wgpu()) else {
        return;
    };
    let cpu = Device::cpu();
    let on_cpu = |v: &[f32], s: &[usize]| cpu.upload(HostSlice::F32(v), s).unwrap();
    let on_gpu = |v: &[f32], s: &[usize]| gpu.upload(HostSlice::F32(v), s).unwrap();
    let expect = |r: mamba_gpu::Result<()>, op: &str, tensor: &str| match r {
        Err(Error::WrongDevice {
            op: o,
            tensor: t,
            got: "wgpu",
            expected: "cpu",
        }) if o == op && t == tensor => {}
        other => panic!("{op}/{tensor}: {other:?}"),
    };
    let a = on_cpu(&[1.0, 2.0], &[2]);
    let b = on_gpu(&[1.0, 2.0], &[2]);
    let mut out = on_cpu(&[0.0, 0.0], &[2]);
    expect(
        ops::elementwise(&cpu, ops::Elementwise::Add, &a, Some(&b), &mut out),
        "elementwise",
        "b",
    );
    let mut gout = on_gpu(&[0.0, 0.0], &[2]);
    expect(ops::copy(&cpu, &a, 0, &mut gout, 0, 2), "copy", "dst");
    expect(
        ops::write(&cpu, HostSlice::F32(&[3.0, 4.0]), &mut gout),
        "write",
        "dst",
    );
    // The refused calls left the CPU output untouched; a right call still works.
    assert_eq!(cpu.download(&out).unwrap().to_f32(), vec![0.0, 0.0]);
    let a2 = on_cpu(&[3.0, 5.0], &[2]);
    ops::elementwise(&cpu, ops::Elementwise::Add, &a, Some(&a2), &mut out).unwrap();
    assert_eq!(cpu.download(&out).unwrap().to_f32(), vec![4.0, 7.0]);
    assert!(matches!(b, DeviceBuf::Wgpu(_)));
    assert_eq!(b.shape(), &[2]);
}

/// `auto()` always gives a device, and reports each backend it passed over. Here (no
/// CUDA GPU; at most a software wgpu adapter) that is CUDA with its reason, and wgpu
/// too unless a hardware adapter was found.
#[test]
fn auto_reports_what_it_skipped() {
    let (dev, skipped) = Device::auto_with_report();
    let info = dev.describe();
    eprintln!("Device::auto: {info}; skipped: {skipped:?}");
    match info.backend {
        "cuda" => assert!(skipped.is_empty()),
        "wgpu" => {
            assert!(
                !info.software,
                "auto must not pick a software adapter: {info}"
            );
            assert_eq!(skipped.len(), 1);
            assert_eq!(skipped[0].backend, "cuda");
        }
        "cpu" => {
            let names: Vec<&str> = skipped.iter().map(|s| s.backend).collect();
            assert_eq!(names, ["cuda", "wgpu"], "{skipped:?}");
        }
        other => panic!("unknown backend {other}"),
    }
    for s in &skipped {
        let text = s.to_string();
        assert!(text.starts_with(s.backend), "{text}");
        assert!(
            text.len() > s.backend.len() + 10,
            "a reason is given: {text}"
        );
    }
    if info.backend != "cuda" {
        let cuda = &skipped[0];
        assert!(
            matches!(
                cuda.reason,
                Error::BackendUnavailable {
                    backend: "cuda",
                    ..
                }
            ),
            "{:?}",
            cuda.reason
        );
    }
    // Whatever it picked runs an op.
    let x = dev
        .upload(HostSlice::F32(&[1.0, -2.0, 3.0]), &[1, 3])
        .unwrap();
    let mut out = dev.zeros(DType::U32, &[1]).unwrap();
    ops::argmax(&dev, &x, &mut out).unwrap();
    assert_eq!(dev.download(&out).unwrap().as_slice().len(), 1);
    assert_eq!(
        dev.download(&out).unwrap(),
        mamba_gpu::HostVec::U32(vec![2])
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_typed_error() {
    let e = Device::cuda(0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BackendUnavailable {
                backend: "cuda",
                ..
            }
        ),
        "{e}"
    );
}

/// A downstream backend that wraps another and forwards its checked calls (all it can do
/// with them, see `mamba_gpu::ops::call`) runs a model exactly as the inner backend.
mod wrapper {
    use std::cell::Cell;

    use mamba_gpu::ops::*;
    use mamba_gpu::{Backend, CpuBackend, CpuBuffer, DType, HostSlice, HostVec, Result};

    pub struct Counting {
        pub inner: CpuBackend,
        pub ops: Cell<usize>,
        pub replays: Cell<usize>,
    }

    impl Counting {
        fn op(&self) {
            self.ops.set(self.ops.get() + 1);
        }
    }

    impl Backend for Counting {
        type Buffer = CpuBuffer;
        fn name(&self) -> &'static str {
            "counting"
        }
        fn supports_weight_dtype(&self, d: DType) -> bool {
            self.inner.supports_weight_dtype(d)
        }
        fn zeros(&self, d: DType, s: &[usize]) -> Result<CpuBuffer> {
            self.inner.zeros(d, s)
        }
        fn upload(&self, data: HostSlice<'_>, s: &[usize]) -> Result<CpuBuffer> {
            self.inner.upload(data, s)
        }
        fn write(&self, data: HostSlice<'_>, b: &mut CpuBuffer) -> Result<()> {
            self.inner.write(data, b)
        }
        fn download(&self, b: &CpuBuffer) -> Result<HostVec> {
            self.inner.download(b)
        }
        fn flush(&self) -> Result<()> {
            self.inner.flush()
        }
        fn replay(&self, call: ReplayCall<'_, Self>) -> Result<()> {
            // `self.inner.replay(call)` would not compile: the call is for `Counting`.
            self.replays.set(self.replays.get() + 1);
            call.run()
        }
        fn embedding(&self, c: EmbeddingCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.embedding(c)
        }
        fn matmul(&self, c: MatmulCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.matmul(c)
        }
        fn rms_norm(&self, c: NormCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.rms_norm(c)
        }
        fn causal_conv1d(&self, c: ConvCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.causal_conv1d(c)
        }
        fn causal_conv1d_update(&self, c: ConvUpdateCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.causal_conv1d_update(c)
        }
        fn selective_scan(&self, c: ScanCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.selective_scan(c)
        }
        fn selective_state_update(&self, c: StepCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.selective_state_update(c)
        }
        fn elementwise(&self, c: ElementwiseCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.elementwise(c)
        }
        fn argmax(&self, c: ArgmaxCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.argmax(c)
        }
        fn copy(&self, c: CopyCall<'_, CpuBuffer>) -> Result<()> {
            self.op();
            self.inner.copy(c)
        }
    }
}

#[test]
fn a_downstream_wrapper_forwards_checked_calls() {
    let want = trace(CpuBackend::new(), DType::F32);
    let w = wrapper::Counting {
        inner: CpuBackend::new(),
        ops: Default::default(),
        replays: Default::default(),
    };
    let got = trace(&w, DType::F32);
    assert_bit_identical("wrapper", &got, &want);
    assert!(
        w.ops.get() > 50,
        "ops went through the wrapper: {}",
        w.ops.get()
    );
    assert_eq!(w.replays.get(), 6, "one replay request per decode step");
    // Its front door is the crate's: bad shapes are refused before the wrapper sees them.
    let x = w.zeros(DType::F32, &[1, 4]).unwrap();
    let mut out = w.zeros(DType::F32, &[1, 3]).unwrap();
    let before = w.ops.get();
    assert!(matches!(
        ops::matmul(&w, &x, &x, None, &mut out),
        Err(Error::Shape { op: "matmul", .. })
    ));
    assert_eq!(w.ops.get(), before);
}
