#![doc = include_str!("../README.md")]

pub mod backend;
pub mod cpu;
pub mod device;
pub mod error;
pub mod ops;
pub mod params;
pub mod quant;
pub mod tensor;

pub use backend::{Backend, DeviceBuffer};
pub use cpu::{CpuBackend, CpuBuffer, Precision};
pub use device::{Device, DeviceBuf, DeviceInfo, Skipped};
pub use error::{Error, Result};
pub use quant::Q8Activations;
pub use tensor::{DType, HostSlice, HostVec};
pub mod model;
#[cfg(feature = "tokenizers")]
pub use model::{TextModel, TextOptions};

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaBuffer};
#[cfg(feature = "wgpu")]
pub mod wgpu;
#[cfg(feature = "wgpu")]
pub use wgpu::{WgpuBackend, WgpuBuffer};
