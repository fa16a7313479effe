//! # mamba-gpu
//!
//! Mamba selective state-space models (Gu & Dao, 2023) on every GPU, from Rust.
//!
//! * [`Backend`] is the seam between the model and the hardware, at the level of ops.
//! * [`ops`] is the front door of every op: shapes and dtypes are validated there, once.
//! * [`cpu::CpuBackend`] is the reference every GPU backend is tested against.
//!
//! ```
//! use mamba_gpu::{Backend, CpuBackend, HostSlice, ops};
//! use mamba_gpu::ops::{Layout, ScanInputs, StateIo};
//!
//! # fn main() -> mamba_gpu::Result<()> {
//! let be = CpuBackend::new();
//! let (batch, dim, len, n) = (1, 2, 3, 4);
//! let seq = |v: f32| vec![v; batch * dim * len];
//! let u = be.upload(HostSlice::F32(&seq(0.5)), &[batch, dim, len])?;
//! let delta = be.upload(HostSlice::F32(&seq(0.1)), &[batch, dim, len])?;
//! let a = be.upload(HostSlice::F32(&vec![-1.0; dim * n]), &[dim, n])?;
//! let bc = be.upload(HostSlice::F32(&vec![0.3; batch * n * len]), &[batch, n, len])?;
//! let mut out = be.zeros(mamba_gpu::DType::F32, &[batch, dim, len])?;
//! let inputs = ScanInputs {
//!     u: &u, delta: &delta, a: &a, b: &bc, c: &bc,
//!     d: None, z: None, delta_bias: None, delta_softplus: false,
//!     layout: Layout::ChannelMajor,
//! };
//! ops::selective_scan(&be, &inputs, StateIo::None, &mut out)?;
//! let y = be.download(&out)?.to_f32();
//! assert!(y.iter().all(|v| *v > 0.0));
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod cpu;
pub mod error;
pub mod ops;
pub mod params;
pub mod tensor;

pub use backend::{Backend, DeviceBuffer};
pub use cpu::{CpuBackend, CpuBuffer};
pub use error::{Error, Result};
pub use tensor::{DType, HostSlice, HostVec};
pub mod model;

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;
