//! [`Device`]: a backend chosen at run time, as one concrete type.
//!
//! [`MambaModel`](crate::model::MambaModel) and its state are generic over the
//! [`Backend`], which is what lets the model be written once. An application that picks
//! the backend at run time would otherwise write a generic function plus a `match` over
//! backends; `Device` is that `match` done once, inside the crate: an enum of the
//! backends that implements [`Backend`] itself, so `MambaModel<Device>`,
//! `State<Device>` and the generators are one type whatever runs underneath.
//!
//! ```
//! use mamba_gpu::{Backend, Device};
//! let (device, skipped) = Device::auto_with_report();
//! for s in &skipped {
//!     eprintln!("auto: skipped {s}"); // e.g. "cuda: backend `cuda` is unavailable: ..."
//! }
//! eprintln!("running on {}", device.describe());
//! assert!(!device.name().is_empty());
//! ```
//!
//! Its buffers are a [`DeviceBuf`], an enum of the backends' buffers. A buffer made by
//! one device handed to a device of another backend is an [`Error::WrongDevice`] naming
//! the op and the tensor. (Two devices of the *same* backend cannot tell their buffers
//! apart, exactly as two `WgpuBackend`s cannot: keep one device per process, shared by
//! reference, as with any backend.)
//!
//! The dispatch costs one `match` per op; kernels and replays (CUDA graphs, wgpu
//! re-encoding) are the inner backend's, unchanged.

mod forward;

use crate::backend::{Backend, DeviceBuffer};
use crate::cpu::{CpuBackend, CpuBuffer, Precision};
use crate::error::{Error, Result};
use crate::ops::call::*;
use crate::tensor::{DType, HostSlice, HostVec};

#[cfg(feature = "cuda")]
use crate::cuda::{CudaBackend, CudaBuffer};
#[cfg(feature = "wgpu")]
use crate::wgpu::{WgpuBackend, WgpuBuffer};

/// A backend picked at run time. See the module docs.
// One device is made per process and held in place (shared by reference), never moved
// in a hot path, so the size of the wgpu variant costs nothing; boxing it would only
// make `Device::Wgpu(backend)` harder to build and match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Device {
    Cpu(CpuBackend),
    #[cfg(feature = "wgpu")]
    Wgpu(WgpuBackend),
    #[cfg(feature = "cuda")]
    Cuda(CudaBackend),
}

/// A buffer of a [`Device`]: the inner backend's buffer.
#[derive(Debug)]
#[non_exhaustive]
pub enum DeviceBuf {
    Cpu(CpuBuffer),
    #[cfg(feature = "wgpu")]
    Wgpu(WgpuBuffer),
    #[cfg(feature = "cuda")]
    Cuda(CudaBuffer),
}

/// A backend [`Device::auto`] passed over, and why.
#[derive(Debug)]
pub struct Skipped {
    /// `"cuda"` or `"wgpu"`.
    pub backend: &'static str,
    /// Why: the error its constructor returned, or an [`Error::BackendUnavailable`]
    /// saying why a working backend was not chosen (a software wgpu adapter).
    pub reason: Error,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.backend, self.reason)
    }
}

/// What a [`Device`] runs on, for logs and `--verbose` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The backend: `"cpu"`, `"wgpu"` or `"cuda"`.
    pub backend: &'static str,
    /// The adapter or GPU name (`"NVIDIA H100 80GB HBM3"`, `"llvmpipe (LLVM 15, 256
    /// bits)"`), or for the CPU backend its arithmetic.
    pub name: String,
    /// The graphics API under wgpu (`"Vulkan"`, `"Metal"`, `"Dx12"`, `"Gl"`), the
    /// compute capability under CUDA (`"sm_90"`); empty for the CPU.
    pub api: String,
    /// A GPU API implemented on the CPU (lavapipe, llvmpipe, WARP): it runs, but the CPU
    /// backend is faster. False for the CPU backend itself and for real GPUs.
    pub software: bool,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.backend, self.name)?;
        match (self.api.is_empty(), self.software) {
            (true, _) => Ok(()),
            (false, true) => write!(f, " ({}, software)", self.api),
            (false, false) => write!(f, " ({}, hardware)", self.api),
        }
    }
}

impl Device {
    /// The CPU backend as models should run on it: f32 scan arithmetic
    /// ([`Precision::Fast`]). For the f64 reference use
    /// `Device::Cpu(CpuBackend::new())`.
    pub fn cpu() -> Device {
        Device::Cpu(CpuBackend::with_precision(Precision::Fast))
    }

    /// The same device with `matmul_q8` taking its activations as `a`
    /// ([`crate::Q8Activations`]; each backend has its own default: int8 on the fast
    /// CPU, f32 on the GPUs). Call it before the first decode step: a recorded replay
    /// (wgpu) or CUDA graph keeps the kernels it recorded.
    pub fn with_q8_activations(self, a: crate::Q8Activations) -> Device {
        match self {
            Device::Cpu(b) => Device::Cpu(b.with_q8_activations(a)),
            #[cfg(feature = "wgpu")]
            Device::Wgpu(b) => {
                b.set_q8_activations(a);
                Device::Wgpu(b)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(b) => {
                b.set_q8_activations(a);
                Device::Cuda(b)
            }
        }
    }

    /// The wgpu backend on the best adapter ([`WgpuBackend::new`]), software adapters
    /// included.
    #[cfg(feature = "wgpu")]
    pub fn wgpu() -> Result<Device> {
        WgpuBackend::new().map(Device::Wgpu)
    }

    /// Without the `wgpu` feature: always [`Error::BackendUnavailable`].
    #[cfg(not(feature = "wgpu"))]
    pub fn wgpu() -> Result<Device> {
        Err(Error::BackendUnavailable {
            backend: "wgpu",
            why: "this build of mamba-gpu has no `wgpu` feature".into(),
        })
    }

    /// The CUDA backend on GPU `ordinal` ([`CudaBackend::new`]).
    #[cfg(feature = "cuda")]
    pub fn cuda(ordinal: usize) -> Result<Device> {
        CudaBackend::new(ordinal).map(Device::Cuda)
    }

    /// Without the `cuda` feature: always [`Error::BackendUnavailable`].
    #[cfg(not(feature = "cuda"))]
    pub fn cuda(ordinal: usize) -> Result<Device> {
        let _ = ordinal;
        Err(Error::BackendUnavailable {
            backend: "cuda",
            why: "this build of mamba-gpu has no `cuda` feature (rebuild with --features cuda)"
                .into(),
        })
    }

    /// The fastest backend here: CUDA on GPU 0, else wgpu on a *hardware* adapter, else
    /// the CPU ([`Device::cpu`]). Never fails. [`Device::auto_with_report`] also says
    /// why each faster backend was passed over.
    pub fn auto() -> Device {
        Device::auto_with_report().0
    }

    /// [`Device::auto`], plus one [`Skipped`] per backend tried and passed over, in the
    /// order tried (CUDA, then wgpu), so an application can print why it is not running
    /// on the GPU it expected. A software wgpu adapter (lavapipe, llvmpipe, WARP) is
    /// passed over for the CPU backend, which is faster than it; ask for
    /// [`Device::wgpu`] to run on one anyway.
    pub fn auto_with_report() -> (Device, Vec<Skipped>) {
        let mut skipped = Vec::new();
        match Device::cuda(0) {
            Ok(d) => return (d, skipped),
            Err(reason) => skipped.push(Skipped {
                backend: "cuda",
                reason,
            }),
        }
        match Device::wgpu() {
            Ok(d) if d.describe().software => {
                let why = format!(
                    "the only adapter, {}, is a software rasterizer; the CPU backend is faster",
                    d.describe().name
                );
                skipped.push(Skipped {
                    backend: "wgpu",
                    reason: Error::BackendUnavailable {
                        backend: "wgpu",
                        why,
                    },
                });
            }
            Ok(d) => return (d, skipped),
            Err(reason) => skipped.push(Skipped {
                backend: "wgpu",
                reason,
            }),
        }
        (Device::cpu(), skipped)
    }

    /// The backend, adapter/GPU name, API and whether it is a software implementation.
    /// `describe().to_string()` reads like `wgpu: llvmpipe (LLVM 15.0.7, 256 bits)
    /// (Vulkan, software)`.
    pub fn describe(&self) -> DeviceInfo {
        match self {
            Device::Cpu(b) => DeviceInfo {
                backend: "cpu",
                name: match b.precision() {
                    Precision::Exact => "f64 reference arithmetic".into(),
                    Precision::Fast => "f32 arithmetic".into(),
                },
                api: String::new(),
                software: false,
            },
            #[cfg(feature = "wgpu")]
            Device::Wgpu(b) => {
                let info = b.adapter_info();
                DeviceInfo {
                    backend: "wgpu",
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    software: info.device_type == ::wgpu::DeviceType::Cpu,
                }
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(b) => {
                let (major, minor) = b.compute_capability();
                DeviceInfo {
                    backend: "cuda",
                    name: b.device_name().to_string(),
                    api: format!("sm_{major}{minor}"),
                    software: false,
                }
            }
        }
    }
}

/// Runs `$body` with `$b` bound to the inner backend.
macro_rules! dispatch {
    ($dev:expr, $b:ident => $body:expr) => {
        match $dev {
            Device::Cpu($b) => $body,
            #[cfg(feature = "wgpu")]
            Device::Wgpu($b) => $body,
            #[cfg(feature = "cuda")]
            Device::Cuda($b) => $body,
        }
    };
}

impl DeviceBuf {
    /// The backend this buffer belongs to.
    pub fn backend(&self) -> &'static str {
        match self {
            DeviceBuf::Cpu(_) => "cpu",
            #[cfg(feature = "wgpu")]
            DeviceBuf::Wgpu(_) => "wgpu",
            #[cfg(feature = "cuda")]
            DeviceBuf::Cuda(_) => "cuda",
        }
    }
}

macro_rules! buf_dispatch {
    ($buf:expr, $b:ident => $body:expr) => {
        match $buf {
            DeviceBuf::Cpu($b) => $body,
            #[cfg(feature = "wgpu")]
            DeviceBuf::Wgpu($b) => $body,
            #[cfg(feature = "cuda")]
            DeviceBuf::Cuda($b) => $body,
        }
    };
}

impl DeviceBuffer for DeviceBuf {
    fn dtype(&self) -> DType {
        buf_dispatch!(self, b => b.dtype())
    }

    fn shape(&self) -> &[usize] {
        buf_dispatch!(self, b => b.shape())
    }

    fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        buf_dispatch!(self, b => b.reshape(shape))
    }

    fn numel(&self) -> usize {
        buf_dispatch!(self, b => b.numel())
    }
}

impl Backend for Device {
    type Buffer = DeviceBuf;

    fn name(&self) -> &'static str {
        dispatch!(self, b => b.name())
    }

    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        dispatch!(self, b => b.supports_weight_dtype(dtype))
    }

    fn zeros(&self, dtype: DType, shape: &[usize]) -> Result<DeviceBuf> {
        dispatch!(self, b => b.zeros(dtype, shape).map(Into::into))
    }

    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> Result<DeviceBuf> {
        dispatch!(self, b => b.upload(data, shape).map(Into::into))
    }

    fn write(&self, data: HostSlice<'_>, buf: &mut DeviceBuf) -> Result<()> {
        dispatch!(self, b => b.write(data, forward::inner_mut(b, "write", "dst", buf)?))
    }

    fn download(&self, buf: &DeviceBuf) -> Result<HostVec> {
        dispatch!(self, b => b.download(forward::inner(b, "download", "buffer", buf)?))
    }

    fn flush(&self) -> Result<()> {
        dispatch!(self, b => b.flush())
    }

    fn replay(&self, call: ReplayCall<'_, Self>) -> Result<()> {
        // The closure records ops on this device, which go to `b`.
        dispatch!(self, b => b.replay(call.forward()))
    }

    fn forget_replays(&self, id: u64) {
        dispatch!(self, b => b.forget_replays(id))
    }

    fn embedding(&self, call: EmbeddingCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::embedding(b, call))
    }

    fn matmul(&self, call: MatmulCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::matmul(b, call))
    }

    fn has_matmul_q8(&self) -> bool {
        dispatch!(self, b => b.has_matmul_q8())
    }

    fn matmul_q8(&self, call: MatmulQ8Call<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::matmul_q8(b, call))
    }

    fn rms_norm(&self, call: NormCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::rms_norm(b, call))
    }

    fn causal_conv1d(&self, call: ConvCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::causal_conv1d(b, call))
    }

    fn causal_conv1d_update(&self, call: ConvUpdateCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::causal_conv1d_update(b, call))
    }

    fn selective_scan(&self, call: ScanCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::selective_scan(b, call))
    }

    fn selective_state_update(&self, call: StepCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::selective_state_update(b, call))
    }

    fn has_ssd_scan(&self) -> bool {
        dispatch!(self, b => b.has_ssd_scan())
    }

    fn ssd_scan(&self, call: SsdCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::ssd_scan(b, call))
    }

    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        dispatch!(self, b => b.fused_step_max_weight_bytes())
    }

    fn mixer_in(&self, call: MixerInCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::mixer_in(b, call))
    }

    fn x_proj(&self, call: XProjCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::x_proj(b, call))
    }

    fn ssm_step(&self, call: SsmStepCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::ssm_step(b, call))
    }

    fn elementwise(&self, call: ElementwiseCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::elementwise(b, call))
    }

    fn argmax(&self, call: ArgmaxCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::argmax(b, call))
    }

    fn copy(&self, call: CopyCall<'_, DeviceBuf>) -> Result<()> {
        dispatch!(self, b => forward::copy(b, call))
    }
}

impl From<CpuBackend> for Device {
    fn from(b: CpuBackend) -> Self {
        Device::Cpu(b)
    }
}

#[cfg(feature = "wgpu")]
impl From<WgpuBackend> for Device {
    fn from(b: WgpuBackend) -> Self {
        Device::Wgpu(b)
    }
}

#[cfg(feature = "cuda")]
impl From<CudaBackend> for Device {
    fn from(b: CudaBackend) -> Self {
        Device::Cuda(b)
    }
}
