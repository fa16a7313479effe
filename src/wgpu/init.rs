//! Creating the backend: the adapter and its limits, the device, the features the
//! shaders use (f16 storage where offered, subgroups), the scan sizing. Async, so the
//! same code serves the browser (where adapter and device are JavaScript promises) and
//! native builds (which block on it through pollster in [`WgpuBackend::with_options`]).

use super::*;

/// The fewest invocations per workgroup (and workgroup size x) an adapter must offer:
/// every kernel but the scan, which sizes itself, uses 256 at most. Not an API: it is
/// public for tests/shaders_naga.rs, which checks every kernel against it.
#[doc(hidden)]
pub const MIN_INVOCATIONS: u32 = 256;

/// The least workgroup memory an adapter must offer: `matmul_decode` and `mixer_in`
/// hold 8 KiB of partial sums (8 sequences × 256 invocations) plus the norms. 16 KiB is
/// the guaranteed minimum of WebGPU and of Vulkan. Public for tests/shaders_naga.rs.
#[doc(hidden)]
pub const MIN_WORKGROUP_BYTES: u32 = 16 * 1024;

impl WgpuBackend {
    /// [`WgpuBackend::with_options`] without blocking (see [`WgpuBackend::new_async`]).
    pub async fn with_options_async(opts: WgpuOptions) -> Result<Self> {
        let unavailable = |why: String| Error::BackendUnavailable {
            backend: BACKEND,
            why,
        };
        if wgpu::Instance::enabled_backend_features().is_empty() {
            return Err(unavailable("no wgpu backend compiled in".into()));
        }
        let mut allowed = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        if cfg!(target_arch = "wasm32") {
            allowed |= wgpu::Backends::BROWSER_WEBGPU;
        }
        if opts.allow_gl {
            allowed |= wgpu::Backends::GL;
        }
        // WGPU_BACKEND may narrow the choice, never add GL to it.
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends &= allowed;
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let gl = if opts.allow_gl {
                    ""
                } else {
                    "; GL adapters only with WgpuOptions::allow_gl"
                };
                unavailable(format!("no adapter among {backends:?}: {e}{gl}"))
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let need = [
            (
                "max_storage_buffers_per_shader_stage",
                limits.max_storage_buffers_per_shader_stage,
                10,
            ),
            (
                "max_compute_invocations_per_workgroup",
                limits.max_compute_invocations_per_workgroup,
                MIN_INVOCATIONS,
            ),
            (
                "max_compute_workgroup_size_x",
                limits.max_compute_workgroup_size_x,
                MIN_INVOCATIONS,
            ),
            (
                "max_compute_workgroup_storage_size",
                limits.max_compute_workgroup_storage_size,
                MIN_WORKGROUP_BYTES,
            ),
        ];
        for (name, have, want) in need {
            if have < want {
                return Err(unavailable(format!(
                    "adapter `{}` has {name} = {have}, the kernels need {want}",
                    info.name
                )));
            }
        }
        let features = adapter.features() & (wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("mamba-gpu"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(format!("request_device on `{}`: {e}", info.name)))?;
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = Arc::clone(&error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = lock(&sink);
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let pow2_in = |s: u32| s.is_power_of_two() && (4..=SCAN_LANES).contains(&s);
        let subgroup_scan = !opts.no_subgroups
            && features.contains(wgpu::Features::SUBGROUP)
            && pow2_in(info.subgroup_min_size)
            && pow2_in(info.subgroup_max_size);
        let max_binding = match opts.max_binding_size {
            Some(m) => m.clamp(1024, limits.max_storage_buffer_binding_size),
            None => limits.max_storage_buffer_binding_size,
        };
        let scan_limits = ScanLimits {
            invocations: limits
                .max_compute_invocations_per_workgroup
                .min(limits.max_compute_workgroup_size_x),
            workgroup_bytes: opts
                .max_workgroup_storage
                .unwrap_or(u32::MAX)
                .min(limits.max_compute_workgroup_storage_size),
        };
        let dummy = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let dummy_read = dummy("dummy read");
        let dummy_rw = dummy("dummy read_write");
        Ok(WgpuBackend {
            device,
            queue,
            info,
            limits,
            max_binding,
            subgroup_scan,
            checked_shaders: opts.checked_shaders,
            scan_limits,
            scan_channels: opts.scan_channels.unwrap_or(SCAN_CHANNELS).max(1),
            ssd_sequential: opts.ssd_sequential,
            q8_int8: (opts.q8_activations == crate::Q8Activations::Int8).into(),
            replays: replay::Replays::new(!opts.no_replay),
            pipelines: Mutex::default(),
            modules: Mutex::default(),
            encoder: Mutex::default(),
            error,
            dummy_read,
            dummy_rw,
            dispatches: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

impl WgpuBackend {
    /// The compute pipeline of `kernel`, created on first use and cached: its module
    /// (joined by `shader_source`), bind group layout (from `Kernel::slots`) and
    /// override constants.
    pub(super) fn pipeline(&self, kernel: Kernel) -> Result<Arc<Pipeline>> {
        if let Some(p) = lock(&self.pipelines).get(&kernel) {
            return Ok(Arc::clone(p));
        }
        let shader = kernel.shader();
        let source = kernels::shader_source(shader.name).map_err(device_err)?;
        let module = {
            let mut modules = lock(&self.modules);
            modules
                .entry(shader.name)
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    };
                    if shader.trusted && !self.checked_shaders {
                        // SAFETY: `Shader::trusted` is set only for shaders whose every
                        // access is guarded by the bounds the host validated (ops.rs) and
                        // encodes in the params (which reach a dispatch only inside a
                        // checked call built by `ops` from the bound buffers:
                        // `crate::ops::call`), whose loops all terminate (bounds from the
                        // params) and whose divisors are validated non-zero; the parity
                        // tests run these modules unchecked.
                        unsafe {
                            self.device.create_shader_module_trusted(
                                desc,
                                wgpu::ShaderRuntimeChecks::unchecked(),
                            )
                        }
                    } else {
                        self.device.create_shader_module(desc)
                    }
                })
                .clone()
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .slots()
            .iter()
            .enumerate()
            .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match slot {
                        Slot::Uniform => wgpu::BufferBindingType::Uniform,
                        Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let label = format!("{kernel:?}");
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let constants = kernel.constants();
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry()),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        self.check()?;
        let p = Arc::new(Pipeline { pipeline, layout });
        lock(&self.pipelines).insert(kernel, Arc::clone(&p));
        Ok(p)
    }
}
