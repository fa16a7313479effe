//! The bindings and uniform structs of every shader, by naga's reflection, against the
//! host: the bind group layouts `src/wgpu` makes (`Kernel::slots`) and the `#[repr(C)]`
//! structs of `src/params.rs` (and `WindowParams`). No GPU needed.
#![cfg(feature = "wgpu")]

mod naga_common;

/// The host's side of every uniform struct: its Rust layout (`size_of`, `offset_of!` and
/// the type of each field), looked up by the WGSL struct's name.
mod host {
    use mamba_gpu::params::*;
    use std::mem::{offset_of, size_of};

    /// A field's WGSL scalar type name, from its Rust type.
    pub trait Scalar {
        const WGSL: &'static str;
    }
    impl Scalar for u32 {
        const WGSL: &'static str = "u32";
    }
    impl Scalar for f32 {
        const WGSL: &'static str = "f32";
    }
    impl Scalar for i32 {
        const WGSL: &'static str = "i32";
    }
    /// The WGSL type of the field `get` reads (a non-capturing closure `|p| &p.field`).
    pub fn scalar_of<P, T: Scalar>(_get: fn(&P) -> &T) -> &'static str {
        T::WGSL
    }

    /// Size and (field, offset, WGSL type) of a uniform struct as the host writes it.
    pub struct Layout {
        pub size: usize,
        pub fields: Vec<(&'static str, usize, &'static str)>,
    }

    macro_rules! layout {
        ($t:ident { $($f:ident),* $(,)? }) => {
            Layout {
                size: size_of::<$t>(),
                fields: vec![$((
                    stringify!($f),
                    offset_of!($t, $f),
                    scalar_of(|p: &$t| &p.$f),
                )),*],
            }
        };
    }

    /// The Rust struct the host binds as `name`, by the one-name-per-struct rule. Listing a
    /// field here that the struct lacks does not compile; a field the list lacks changes
    /// the size or the member count checked against the shader.
    pub fn layout(name: &str) -> Option<Layout> {
        Some(match name {
            "ScanParams" => layout!(ScanParams {
                batch,
                dim,
                len,
                dstate,
                x_sb,
                x_sd,
                x_st,
                b_sb,
                b_sg,
                b_sn,
                b_st,
                b_group_dim,
                c_sb,
                c_sg,
                c_sn,
                c_st,
                c_group_dim,
                has_d,
                has_z,
                has_delta_bias,
                delta_softplus,
                state_mode,
                _pad0,
                _pad1,
            }),
            "SsdParams" => layout!(SsdParams {
                batch,
                len,
                heads,
                head_dim,
                dstate,
                groups,
                has_d,
                has_z,
                has_dt_bias,
                dt_softplus,
                state_mode,
                t_begin,
                t_end,
                _pad0,
                _pad1,
                _pad2,
            }),
            "StepParams" => layout!(StepParams {
                batch,
                dim,
                dstate,
                group_dim,
                groups,
                has_d,
                has_z,
                has_dt_bias,
                dt_softplus,
                _pad0,
                _pad1,
                _pad2,
            }),
            "ConvParams" => layout!(ConvParams {
                batch,
                dim,
                len,
                width,
                x_sb,
                x_sd,
                x_st,
                has_bias,
                silu,
                state_mode,
                _pad0,
                _pad1,
            }),
            "MatmulParams" => layout!(MatmulParams {
                m,
                n,
                k,
                has_bias,
                accumulate,
                _pad0,
                _pad1,
                _pad2
            }),
            "MixerInParams" => layout!(MixerInParams {
                batch,
                d_model,
                d_inner,
                width,
                eps,
                has_conv_bias,
                _pad0,
                _pad1
            }),
            "StepProjParams" => layout!(StepProjParams {
                batch,
                d_inner,
                dt_rank,
                dstate,
                has_norm,
                norm_eps,
                _pad0,
                _pad1
            }),
            "NormParams" => layout!(NormParams {
                rows,
                dim,
                eps,
                has_residual,
                groups,
                _pad0,
                _pad1,
                _pad2
            }),
            "EmbeddingParams" => layout!(EmbeddingParams {
                count,
                rows,
                dim,
                _pad0
            }),
            "ElementwiseParams" => layout!(ElementwiseParams {
                len,
                op,
                _pad0,
                _pad1
            }),
            "ArgmaxParams" => layout!(ArgmaxParams {
                rows,
                cols,
                _pad0,
                _pad1
            }),
            "CopyParams" => layout!(CopyParams {
                len,
                src_offset,
                dst_offset,
                _pad0
            }),
            "WindowParams" => {
                // Private to src/wgpu/window.rs; all u32.
                let (size, fields) = mamba_gpu::wgpu::window_params_layout();
                Layout {
                    size,
                    fields: fields.into_iter().map(|(f, o)| (f, o, "u32")).collect(),
                }
            }
            _ => return None,
        })
    }

    /// The uniform structs each entry point binds, in binding order (what src/wgpu/ops.rs
    /// passes as `Bind::Uniform`).
    pub fn uniforms(entry: &str) -> &'static [&'static str] {
        match entry {
            "selective_scan" => &["ScanParams"],
            "selective_state_update" => &["StepParams"],
            "ssd_scan" | "ssd_scan_chunked" => &["SsdParams"],
            "causal_conv1d" | "causal_conv1d_state" | "causal_conv1d_update" => &["ConvParams"],
            "matmul" | "matmul_decode" => &["MatmulParams", "WindowParams"],
            "matmul_q8" | "matmul_q8_int8" => &["MatmulParams"],
            "rms_norm" => &["NormParams"],
            "mixer_in" => &["MixerInParams"],
            "x_proj" | "ssm_step" => &["StepProjParams"],
            "embedding" => &["EmbeddingParams", "WindowParams"],
            "elementwise" => &["ElementwiseParams"],
            "argmax" => &["ArgmaxParams"],
            "copy" => &["CopyParams"],
            _ => &[],
        }
    }
}

/// Reflection over every pipeline's module against the host: each `@binding` has the
/// kind (uniform / storage read / storage read_write) and number of the bind group
/// layout the backend makes from `Kernel::slots`, nothing is bound that the layout lacks
/// or the reverse, and each uniform struct has the size, member names, offsets and types
/// of its `#[repr(C)]` Rust twin (`size_of`, `offset_of!`), so a field reordered, added or
/// retyped on either side fails here instead of reading the wrong word on a GPU.
#[test]
fn param_layouts_and_bindings_match_the_host() {
    use naga::{AddressSpace, StorageAccess, TypeInner};
    let mut failures = Vec::new();
    let mut structs_checked = std::collections::BTreeSet::new();
    for p in &naga_common::all_pipelines() {
        let (m, _) = match naga_common::parse(p) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{}: {e}", p.kernel));
                continue;
            }
        };
        let mut fail = |why: String| failures.push(format!("{} ({}): {why}", p.kernel, p.file));
        let mut bound: Vec<(u32, &'static str, String)> = Vec::new();
        for (_, g) in m.global_variables.iter() {
            let Some(rb) = &g.binding else { continue };
            if rb.group != 0 {
                fail(format!(
                    "binding in group {}, the host binds group 0",
                    rb.group
                ));
            }
            let kind = match g.space {
                AddressSpace::Uniform => "uniform",
                AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                    "storage read_write"
                }
                AddressSpace::Storage { .. } => "storage read",
                other => {
                    fail(format!("binding {} in {other:?}", rb.binding));
                    continue;
                }
            };
            let ty = m.types[g.ty].name.clone().unwrap_or_default();
            bound.push((rb.binding, kind, ty));
        }
        bound.sort();
        let shader: Vec<(u32, &str)> = bound.iter().map(|(b, k, _)| (*b, *k)).collect();
        let layout: Vec<(u32, &str)> = (0..).zip(p.bindings.iter().copied()).collect();
        if shader != layout {
            fail(format!(
                "shader bindings {shader:?}, host layout {layout:?}"
            ));
        }
        let shader_uniforms: Vec<&str> = bound
            .iter()
            .filter(|(_, k, _)| *k == "uniform")
            .map(|(_, _, t)| t.as_str())
            .collect();
        let host_uniforms = host::uniforms(p.entry);
        if shader_uniforms != host_uniforms {
            fail(format!(
                "uniform structs {shader_uniforms:?}, the host binds {host_uniforms:?}"
            ));
        }
        for (_, g) in m.global_variables.iter() {
            if g.space != AddressSpace::Uniform {
                continue;
            }
            let ty = &m.types[g.ty];
            let name = ty.name.clone().unwrap_or_default();
            let TypeInner::Struct { members, span } = &ty.inner else {
                fail(format!("uniform `{name}` is not a struct"));
                continue;
            };
            let Some(rust) = host::layout(&name) else {
                fail(format!("no Rust struct named `{name}` in src/params.rs"));
                continue;
            };
            let wgsl: Vec<(String, usize, String)> = members
                .iter()
                .map(|mem| {
                    let scalar = match m.types[mem.ty].inner {
                        TypeInner::Scalar(s) => match (s.kind, s.width) {
                            (naga::ScalarKind::Uint, 4) => "u32",
                            (naga::ScalarKind::Float, 4) => "f32",
                            (naga::ScalarKind::Sint, 4) => "i32",
                            _ => "other scalar",
                        },
                        _ => "not a scalar",
                    };
                    let member = mem.name.clone().unwrap_or_default();
                    (member, mem.offset as usize, scalar.to_string())
                })
                .collect();
            let rust_fields: Vec<(String, usize, String)> = rust
                .fields
                .iter()
                .map(|&(f, o, t)| (f.to_string(), o, t.to_string()))
                .collect();
            if *span as usize != rust.size || wgsl != rust_fields {
                fail(format!(
                    "`{name}`: WGSL {span} bytes {wgsl:?}\n  Rust {} bytes {rust_fields:?}",
                    rust.size
                ));
            }
            structs_checked.insert(name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        structs_checked.len(),
        13,
        "uniform structs seen: {structs_checked:?}"
    );
}
