//! Buffers of impossible sizes are typed errors naming the op, the tensor and the shape,
//! on every backend, in release and debug builds: an element count that overflows
//! (`zeros(U32, [1 << 63])` used to panic with "capacity overflow"; `upload(&[],
//! [1 << 63, 2])` used to succeed because the count wrapped to 0), more elements than
//! the kernels' 32-bit indexing reaches, and reshapes whose count wraps.

mod common;

use mamba_gpu::tensor::{MAX_BUFFER_ELEMENTS, buffer_numel, checked_numel, numel};
use mamba_gpu::{Backend, CpuBackend, DType, Device, DeviceBuffer, Error, HostSlice};

fn assert_size_err<T>(what: &str, r: mamba_gpu::Result<T>, op: &str, shape: &[usize]) {
    match r {
        Err(Error::BufferSize {
            op: o, shape: s, ..
        }) if o == op && s == shape => {}
        Err(e) => panic!("{what}: expected a BufferSize error from {op} for {shape:?}, got {e:?}"),
        Ok(_) => panic!("{what}: {op} accepted the impossible shape {shape:?}"),
    }
}

/// The cases every backend must refuse, and the sizes it must still accept.
fn check_sizes<B: Backend>(be: &B) {
    let name = be.name();
    let wraps = [1usize << 63, 2];
    for dtype in [DType::U32, DType::F32, DType::F16] {
        assert_size_err(name, be.zeros(dtype, &[1 << 63]), "zeros", &[1 << 63]);
        assert_size_err(name, be.zeros(dtype, &wraps), "zeros", &wraps);
        // Fits usize, but not the kernels' u32 indexing: refused before any allocation.
        let big = [MAX_BUFFER_ELEMENTS + 1];
        assert_size_err(name, be.zeros(dtype, &big), "zeros", &big);
        let big2 = [1 << 20, 1 << 13];
        assert_size_err(name, be.zeros(dtype, &big2), "zeros", &big2);
    }
    assert_size_err(
        name,
        be.upload(HostSlice::F32(&[]), &wraps),
        "upload",
        &wraps,
    );
    assert_size_err(
        name,
        be.upload(HostSlice::U32(&[]), &wraps),
        "upload",
        &wraps,
    );
    assert_size_err(
        name,
        be.upload(HostSlice::U32(&[7; 4]), &[1 << 62, 4, 1]),
        "upload",
        &[1 << 62, 4, 1],
    );
    // The message names the op, the buffer and the shape.
    let text = match be.zeros(DType::U32, &[1 << 63]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{name}: zeros accepted [1 << 63]"),
    };
    assert!(
        text.starts_with("zeros:") && text.contains("9223372036854775808"),
        "{text}"
    );

    // Reshapes: a count that wraps to the buffer's own is no longer a match.
    let mut empty = be.zeros(DType::F32, &[0]).unwrap();
    assert_size_err(name, empty.reshape(&wraps), "reshape", &wraps);
    assert_eq!(
        empty.shape(),
        &[0],
        "{name}: a refused reshape keeps the shape"
    );
    let mut four = be
        .upload(HostSlice::F32(&[1.0, 2.0, 3.0, 4.0]), &[2, 2])
        .unwrap();
    assert_size_err(
        name,
        four.reshape(&[1 << 62, 4, 1 << 2]),
        "reshape",
        &[1 << 62, 4, 1 << 2],
    );
    assert!(matches!(
        four.reshape(&[3]),
        Err(Error::Shape { op: "reshape", .. })
    ));
    four.reshape(&[4, 1]).unwrap();
    assert_eq!(
        be.download(&four).unwrap().to_f32(),
        vec![1.0, 2.0, 3.0, 4.0]
    );

    // Ordinary sizes, empty ones included, still work.
    let z = be.zeros(DType::U32, &[3, 0]).unwrap();
    assert_eq!(z.numel(), 0);
    let u = be.upload(HostSlice::U32(&[5, 6, 7]), &[3]).unwrap();
    assert_eq!(
        be.download(&u).unwrap(),
        mamba_gpu::HostVec::U32(vec![5, 6, 7])
    );
}

#[test]
fn impossible_sizes_cpu() {
    check_sizes(&CpuBackend::new());
    check_sizes(&Device::cpu());
}

#[cfg(feature = "wgpu")]
#[test]
fn impossible_sizes_wgpu() {
    let Some(be) = common::gpu::or_skip(
        "wgpu",
        "wgpu buffer-size tests",
        mamba_gpu::WgpuBackend::new(),
    ) else {
        return;
    };
    check_sizes(&be);
    check_sizes(&Device::Wgpu(be));
}

/// CUDA runs the same checks where a GPU is present; without one (this machine) the
/// front door they all share is tested on its own below.
#[cfg(feature = "cuda")]
#[test]
fn impossible_sizes_cuda() {
    let Some(be) = common::gpu::or_skip(
        "cuda",
        "cuda buffer-size tests",
        mamba_gpu::CudaBackend::new(0),
    ) else {
        return;
    };
    check_sizes(&be);
}

/// The shared front door (`zeros`/`upload`/`reshape` of every backend go through it).
#[test]
fn the_front_door_counts_without_wrapping() {
    assert_eq!(checked_numel(&[1 << 63, 2]), None);
    assert_eq!(
        checked_numel(&[1 << 63, 2, 0]),
        Some(0),
        "a zero dimension: no elements"
    );
    assert_eq!(checked_numel(&[3, 0, 5]), Some(0));
    assert_eq!(checked_numel(&[]), Some(1));
    assert_eq!(
        numel(&[1 << 63, 2]),
        usize::MAX,
        "saturates instead of wrapping to 0"
    );
    assert_eq!(
        buffer_numel("zeros", "buffer", DType::F16, &[3, 5]).unwrap(),
        (15, 30)
    );
    assert_eq!(
        buffer_numel("zeros", "buffer", DType::U32, &[MAX_BUFFER_ELEMENTS]).unwrap(),
        (MAX_BUFFER_ELEMENTS, MAX_BUFFER_ELEMENTS * 4)
    );
    let e = buffer_numel("upload", "data", DType::F32, &[MAX_BUFFER_ELEMENTS, 2]).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::BufferSize {
                op: "upload",
                tensor: "data",
                dtype: Some(DType::F32),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("32-bit"), "{e}");
}
