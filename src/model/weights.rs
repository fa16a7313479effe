//! Loading a checkpoint: `model.safetensors` or a sharded `model.safetensors.index.json`,
//! or a GGUF file (`gguf_model.rs` maps its tensors onto the names here), memory-mapped
//! (the file is read by the OS page by page while tensors are uploaded; it is never
//! copied whole into RAM), or from in-memory bytes (embedded models, wasm).
//!
//! Tensors may be f32, f16 or bf16 in the file (GGUF: also Q8_0, uploaded as it is
//! for Q8_0 projections, dequantized elsewhere). Matmul weights and the embedding table
//! are stored on the device in the chosen [`WeightDType`]; conv weights, A, D, norms and
//! biases are stored as f32. At load:
//! * `A = −exp(A_log)` (f32; a GGUF file stores A itself);
//! * `conv1d.weight (E, 1, K)` → `(E, K)`;
//! * `in_proj.weight (2E, D)` is split into `W_x (E, D)` and `W_z (E, D)`;
//! * `x_proj.weight (R + 2N, E)` into `W_dt (R, E)`, `W_B (N, E)`, `W_C (N, E)`.
//!
//! Falcon-Mamba has the same tensors; its weightless norms get all-ones weights
//! ([`UnitNorms`]). Mamba-2 maps onto the same fields (see `weights_mamba2.rs`).
//!
//! Every tensor name and shape is checked against the config before anything is
//! uploaded, so a bad checkpoint fails fast with an error naming the file and tensor.

use std::collections::{BTreeMap, HashSet};

use safetensors::SafeTensors;

pub use super::checkpoint::Shard;
use super::checkpoint::parse_shard;
use super::config::{Family, MambaConfig};
use super::linear::{Linear, upload_linear};
use super::tensor_io::{SrcDType, a_values, check_finite, dtype_error, elem_dtype};
pub(super) use super::tensor_io::{to_f32, upload};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice};

/// Storage dtype of the matmul weights and the embedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDType {
    /// The checkpoint's dtype when the backend supports it, else f32. (A GGUF file whose
    /// projections are Q8_0: those in Q8_0 where the backend has the kernel, the matrices
    /// kept in float, embedding and x_proj, in f16.)
    #[default]
    Auto,
    F32,
    F16,
    BF16,
    /// 8-bit weights: the in/out projections and the LM head quantized at load to Q8_0
    /// ([`crate::quant`]; a tied head gets its own quantized copy, the embedding lookup
    /// stays float); everything else as `Auto`, except that an f32 checkpoint's float
    /// matrices (embedding, x_proj, dt_proj) are f16 where the backend has f16 weights
    /// and all its values fit: half the bytes those read per token, and f16's rounding
    /// errs far less than the quantization. Needs [`Backend::has_matmul_q8`].
    /// A GGUF file's Q8_0 tensors are taken as they are, not quantized again (`Auto`
    /// does the same for a file whose projections are Q8_0, on a backend with the
    /// kernel; elsewhere they are dequantized).
    Q8_0,
}

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub weight_dtype: WeightDType,
    /// Show a progress bar on stderr while uploading (only when stderr is a terminal).
    pub progress: bool,
    /// Load tensors holding NaN or ±inf (and an `A_log` whose `-exp` overflows, or a
    /// GGUF `ssm_a` with a positive A, [`Error::WeightValue`]).
    /// Off by default: such a checkpoint yields NaN logits, which sampling would turn
    /// into a silent one-token "generation"; the load fails with
    /// [`Error::NonFiniteWeight`] naming the tensor instead. Turn it on only to inspect
    /// a broken checkpoint.
    pub allow_non_finite: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            weight_dtype: WeightDType::Auto,
            progress: true,
            allow_non_finite: false,
        }
    }
}

/// The weights of one Mamba block, as the forward pass uses them.
pub struct LayerWeights<B: Backend> {
    /// RMSNorm weight `(D)`, f32.
    pub norm: B::Buffer,
    /// x half of in_proj `(E, D)`.
    pub w_x: Linear<B>,
    /// z (gate) half of in_proj `(E, D)`.
    pub w_z: Linear<B>,
    pub b_x: Option<B::Buffer>,
    pub b_z: Option<B::Buffer>,
    /// `(E, K)`, f32.
    pub conv_w: B::Buffer,
    pub conv_b: Option<B::Buffer>,
    /// Δ rows of x_proj `(R, E)`.
    pub w_dt: B::Buffer,
    /// B rows of x_proj `(N, E)`.
    pub w_b: B::Buffer,
    /// C rows of x_proj `(N, E)`.
    pub w_c: B::Buffer,
    /// dt_proj `(E, R)` (Mamba-2: see [`Mamba2Extra`]; `None` for the head-form scan).
    pub dt_proj: Option<B::Buffer>,
    /// dt_proj bias `(E)`, f32: the scan's `delta_bias` (Mamba-2: see [`Mamba2Extra`]).
    pub dt_bias: B::Buffer,
    /// `A = −exp(A_log)` `(E, N)`, f32 (Mamba-2: see [`Mamba2Extra`]).
    pub a: B::Buffer,
    /// `(E)`, f32.
    pub d: B::Buffer,
    /// out_proj `(D, E)`.
    pub out_w: Linear<B>,
    pub out_b: Option<B::Buffer>,
    /// Mamba-2 only: what Mamba-1 has no place for.
    pub mamba2: Option<Mamba2Extra<B>>,
}

/// The Mamba-2 weights beyond [`LayerWeights`]' Mamba-1 fields. There, `w_dt (H, D)`,
/// `w_b`/`w_c (G·N, D)` are rows of `in_proj`; `conv_w`/`conv_b` the x channels of the
/// conv; `a`, `d`, `dt_bias` are per head `(H)` on backends with the head-form scan
/// ([`crate::Backend::has_ssd_scan`]); on others they are repeated over each head's
/// channels (and states), `(E, N)` / `(E)`, and `dt_proj (E, H)` is the 0/1 matrix that
/// repeats each head's Δ over its `head_dim` channels (exact in every dtype).
pub struct Mamba2Extra<B: Backend> {
    /// The conv over the B and C channels `(G·N, K)`, f32.
    pub conv_wb: B::Buffer,
    pub conv_wc: B::Buffer,
    pub conv_bb: Option<B::Buffer>,
    pub conv_bc: Option<B::Buffer>,
    /// in_proj bias parts of B, C and Δ (`use_bias`).
    pub b_b: Option<B::Buffer>,
    pub b_c: Option<B::Buffer>,
    pub b_dt: Option<B::Buffer>,
    /// The gated grouped norm's weight `(E)`, f32.
    pub norm: B::Buffer,
}

/// All-ones weights `(R)` and `(N)`: Falcon-Mamba's weightless RMS norms run as
/// the weighted norm op (`x · 1` is exact).
pub struct UnitNorms<B: Backend> {
    pub dt: B::Buffer,
    pub bc: B::Buffer,
}

/// All the weights of a model.
pub struct Weights<B: Backend> {
    /// `(V, D)` in the storage dtype.
    pub embedding: B::Buffer,
    pub layers: Vec<LayerWeights<B>>,
    /// `(D)`, f32.
    pub norm_f: B::Buffer,
    /// `(V, D)`; `None` when tied to the embedding table (with Q8_0 weights, a tied
    /// head is a quantized copy of it).
    pub lm_head: Option<Linear<B>>,
    /// Falcon-Mamba only.
    pub unit_norms: Option<UnitNorms<B>>,
    /// The storage dtype chosen for matmul weights (the float ones, with Q8_0).
    pub dtype: DType,
    /// Whether the projections were quantized to Q8_0 ([`WeightDType::Q8_0`]).
    pub q8: bool,
}

/// One tensor the model expects.
pub(super) struct Spec {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    /// Alternative accepted shape (conv1d weight as `(E, K)`).
    pub(super) alt_shape: Option<Vec<usize>>,
    pub(super) required: bool,
}

/// A tensor of the checkpoint, whatever its file format: an entry of the [`Index`].
#[derive(Clone)]
pub(super) struct Found<'a> {
    pub(super) file: String,
    /// The name the file gives it (errors name it so).
    pub(super) name: String,
    pub(super) dtype: SrcDType,
    /// In PyTorch order (slowest dimension first).
    pub(super) shape: Vec<usize>,
    pub(super) bytes: &'a [u8],
    /// For `A_log` entries: the file stores `A = −exp(A_log)` itself (GGUF's `ssm_a`).
    pub(super) holds_a: bool,
    /// The dtypes this file format can hold, for [`Error::TensorDType`].
    pub(super) accepts: &'static str,
}

/// The checkpoint's tensors by their Hugging Face name (`backbone.layers.0.mixer.A_log`,
/// ...): what [`load_index`] builds the model from. A safetensors checkpoint is indexed
/// as it is named; a GGUF file maps its names onto these (`gguf_model.rs`).
pub(super) type Index<'a> = BTreeMap<String, Found<'a>>;

/// The names of the tensors, with the prefix/embedding spelling this checkpoint uses.
struct Names {
    prefix: &'static str,
    embedding: String,
}

impl Names {
    fn layer(&self, i: usize, what: &str) -> String {
        format!("{}layers.{i}.{what}", self.prefix)
    }
}

/// Builds the device weights from safetensors blobs; `label` names the checkpoint as a
/// whole in errors about tensors that are missing.
pub(crate) fn load_weights<B: Backend>(
    be: &B,
    cfg: &MambaConfig,
    label: &str,
    shards: &[Shard<'_>],
    opts: &LoadOptions,
) -> Result<Weights<B>> {
    let parsed: Vec<SafeTensors<'_>> = shards.iter().map(parse_shard).collect::<Result<_>>()?;
    let mut all = Index::new();
    for (si, st) in parsed.iter().enumerate() {
        for (name, view) in st.iter() {
            if all.contains_key(name) {
                return Err(Error::CheckpointCorrupt {
                    file: shards[si].file.clone(),
                    why: format!("tensor `{name}` also appears in another shard"),
                });
            }
            let found = Found {
                file: shards[si].file.clone(),
                name: name.to_string(),
                dtype: SrcDType::from_safetensors(view.dtype()),
                shape: view.shape().to_vec(),
                bytes: view.data(),
                holds_a: false,
                accepts: "F32, F16 or BF16",
            };
            all.insert(name.to_string(), found);
        }
    }
    load_index(be, cfg, label, &all, &|n: &str| n.to_string(), opts)
}

/// Builds the device weights from an [`Index`] of the checkpoint's tensors. `file_name`
/// spells a Hugging Face tensor name as the file would, for errors about a tensor that
/// is missing.
pub(super) fn load_index<B: Backend>(
    be: &B,
    cfg: &MambaConfig,
    label: &str,
    all: &Index<'_>,
    file_name: &dyn Fn(&str) -> String,
    opts: &LoadOptions,
) -> Result<Weights<B>> {
    // Which spelling of the names is this?
    let mut names = None;
    for (prefix, emb) in [
        ("backbone.", "embeddings"),
        ("backbone.", "embedding"),
        ("", "embeddings"),
        ("", "embedding"),
    ] {
        let e = format!("{prefix}{emb}.weight");
        if all.contains_key(&e) {
            names = Some(Names {
                prefix,
                embedding: e,
            });
            break;
        }
    }
    let names = names.ok_or_else(|| Error::MissingTensor {
        file: label.into(),
        tensor: file_name("backbone.embeddings.weight"),
    })?;

    check_layer_count(cfg, label, &names, all)?;

    let (d, e, n, k, r, v) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.state_size,
        cfg.conv_kernel,
        cfg.dt_rank,
        cfg.vocab_size,
    );
    let mut specs = vec![Spec {
        name: names.embedding.clone(),
        shape: vec![v, d],
        alt_shape: None,
        required: true,
    }];
    let spec = |name: String, shape: Vec<usize>, required: bool| Spec {
        name,
        shape,
        alt_shape: None,
        required,
    };
    for i in 0..cfg.num_layers {
        let l = |w: &str| names.layer(i, w);
        specs.push(spec(l("norm.weight"), vec![d], true));
        if let Family::Mamba2(m2) = &cfg.family {
            specs.extend(super::weights_mamba2::specs(cfg, m2, &l));
            continue;
        }
        specs.push(spec(l("mixer.A_log"), vec![e, n], true));
        specs.push(spec(l("mixer.D"), vec![e], true));
        specs.push(Spec {
            name: l("mixer.conv1d.weight"),
            shape: vec![e, 1, k],
            alt_shape: Some(vec![e, k]),
            required: true,
        });
        if cfg.use_conv_bias {
            specs.push(spec(l("mixer.conv1d.bias"), vec![e], true));
        }
        specs.push(spec(l("mixer.in_proj.weight"), vec![2 * e, d], true));
        if cfg.use_bias {
            specs.push(spec(l("mixer.in_proj.bias"), vec![2 * e], true));
        }
        specs.push(spec(l("mixer.x_proj.weight"), vec![r + 2 * n, e], true));
        specs.push(spec(l("mixer.dt_proj.weight"), vec![e, r], true));
        specs.push(spec(l("mixer.dt_proj.bias"), vec![e], true));
        specs.push(spec(l("mixer.out_proj.weight"), vec![d, e], true));
        if cfg.use_bias {
            specs.push(spec(l("mixer.out_proj.bias"), vec![d], true));
        }
    }
    specs.push(spec(
        format!("{}norm_f.weight", names.prefix),
        vec![d],
        true,
    ));
    specs.push(spec(
        "lm_head.weight".into(),
        vec![v, d],
        !cfg.tie_word_embeddings,
    ));

    // Check everything before uploading anything.
    let expected: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for s in &specs {
        match all.get(&s.name) {
            None if s.required => {
                return Err(Error::MissingTensor {
                    file: label.into(),
                    tensor: file_name(&s.name),
                });
            }
            None => {}
            Some(t) => {
                if elem_dtype(&t.dtype).is_none() {
                    return Err(dtype_error(t));
                }
                if t.shape != s.shape && Some(&t.shape) != s.alt_shape.as_ref() {
                    return Err(Error::TensorShape {
                        file: t.file.clone(),
                        tensor: t.name.clone(),
                        got: t.shape.clone(),
                        expected: s.shape.clone(),
                    });
                }
            }
        }
    }
    // Values second: every tensor that will be uploaded is finite (its shape, so its
    // length, is known to be right now).
    if !opts.allow_non_finite {
        for s in &specs {
            if s.name == "lm_head.weight" && cfg.tie_word_embeddings {
                continue; // not loaded
            }
            if let Some(t) = all.get(&s.name) {
                check_finite(&t.file, &t.name, &t.dtype, t.bytes)?;
            }
        }
    }
    if let Some(t) = all
        .iter()
        .find_map(|(k, t)| (!expected.contains(k.as_str())).then_some(t))
    {
        return Err(Error::UnexpectedTensor {
            file: t.file.clone(),
            tensor: t.name.clone(),
        });
    }

    // Storage dtype: the embedding's. A Q8_0 file keeps its float matrices (the
    // embedding lookup, x_proj, dt_proj) in f16: `d·q` rounded to f16 errs far less than
    // the quantization did, at half of f32's memory.
    let emb = &all[&names.embedding];
    let emb_dtype = match emb.dtype {
        SrcDType::Q8_0 if be.supports_weight_dtype(DType::F16) => DType::F16,
        ref d => elem_dtype(d).unwrap_or(DType::F32),
    };
    let dtype = match opts.weight_dtype {
        // A q8 model's float matrices in f16, as a Q8_0 file's are (above).
        WeightDType::Q8_0
            if emb_dtype == DType::F32
                && be.supports_weight_dtype(DType::F16)
                && all.values().all(fits_f16) =>
        {
            DType::F16
        }
        WeightDType::Auto | WeightDType::Q8_0 if be.supports_weight_dtype(emb_dtype) => emb_dtype,
        WeightDType::Auto | WeightDType::Q8_0 => DType::F32,
        WeightDType::F32 => DType::F32,
        WeightDType::F16 => DType::F16,
        WeightDType::BF16 => DType::BF16,
    };
    if !be.supports_weight_dtype(dtype) {
        return Err(Error::WeightDTypeUnsupported {
            backend: be.name(),
            dtype,
        });
    }
    // Q8_0 projections when asked for, and by default for a file whose in_proj is
    // Q8_0 (its blocks are uploaded as they are) where the backend has the kernel.
    let file_q8 = all
        .get(&names.layer(0, "mixer.in_proj.weight"))
        .is_some_and(|t| t.dtype == SrcDType::Q8_0);
    let q8 = match opts.weight_dtype {
        WeightDType::Q8_0 => true,
        WeightDType::Auto => file_q8 && be.has_matmul_q8(),
        _ => false,
    };
    if q8 && !be.has_matmul_q8() {
        return Err(Error::limit(
            be.name(),
            "load",
            "weights",
            "Q8_0 weights need a matmul_q8 kernel, which this backend lacks",
        ));
    }

    let total: u64 = specs
        .iter()
        .filter_map(|s| all.get(&s.name))
        .map(|t| t.bytes.len() as u64)
        .sum();
    let bar = progress_bar(opts.progress, total);
    let get = |name: &str| -> Found<'_> {
        let t = all[name].clone();
        bar.inc(t.bytes.len() as u64);
        t
    };

    let emb_t = get(&names.embedding);
    let embedding = upload(be, &emb_t, 0, v * d, &[v, d], dtype)?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let l = |w: &str| names.layer(i, w);
        let f32v = |t: &Found<'_>, shape: &[usize]| {
            upload(be, t, 0, shape.iter().product(), shape, DType::F32)
        };
        let norm = f32v(&get(&l("norm.weight")), &[d])?;
        if let Family::Mamba2(m2) = &cfg.family {
            let lw =
                super::weights_mamba2::load_layer(be, cfg, m2, norm, &get, &l, dtype, q8, opts)?;
            layers.push(lw);
            continue;
        }
        let a_t = get(&l("mixer.A_log"));
        let a = a_values(&a_t, 0, e * n, "element", opts.allow_non_finite)?;
        let a = be.upload(HostSlice::F32(&a), &[e, n])?;
        let dd = f32v(&get(&l("mixer.D")), &[e])?;
        let conv_w = f32v(&get(&l("mixer.conv1d.weight")), &[e, k])?;
        let conv_b = if cfg.use_conv_bias {
            Some(f32v(&get(&l("mixer.conv1d.bias")), &[e])?)
        } else {
            None
        };
        let inp = get(&l("mixer.in_proj.weight"));
        let w_x = upload_linear(be, &inp, 0, [e, d], dtype, q8)?;
        let w_z = upload_linear(be, &inp, e * d, [e, d], dtype, q8)?;
        let (b_x, b_z) = if cfg.use_bias {
            let b = get(&l("mixer.in_proj.bias"));
            (
                Some(upload(be, &b, 0, e, &[e], DType::F32)?),
                Some(upload(be, &b, e, e, &[e], DType::F32)?),
            )
        } else {
            (None, None)
        };
        let xp = get(&l("mixer.x_proj.weight"));
        let w_dt = upload(be, &xp, 0, r * e, &[r, e], dtype)?;
        let w_b = upload(be, &xp, r * e, n * e, &[n, e], dtype)?;
        let w_c = upload(be, &xp, (r + n) * e, n * e, &[n, e], dtype)?;
        let dt_proj = Some(upload(
            be,
            &get(&l("mixer.dt_proj.weight")),
            0,
            e * r,
            &[e, r],
            dtype,
        )?);
        let dt_bias = f32v(&get(&l("mixer.dt_proj.bias")), &[e])?;
        let out_w = upload_linear(be, &get(&l("mixer.out_proj.weight")), 0, [d, e], dtype, q8)?;
        let out_b = if cfg.use_bias {
            Some(f32v(&get(&l("mixer.out_proj.bias")), &[d])?)
        } else {
            None
        };
        layers.push(LayerWeights {
            norm,
            w_x,
            w_z,
            b_x,
            b_z,
            conv_w,
            conv_b,
            w_dt,
            w_b,
            w_c,
            dt_proj,
            dt_bias,
            a,
            d: dd,
            out_w,
            out_b,
            mamba2: None,
        });
    }
    let norm_f = upload(
        be,
        &get(&format!("{}norm_f.weight", names.prefix)),
        0,
        d,
        &[d],
        DType::F32,
    )?;
    let lm_head = if cfg.tie_word_embeddings {
        if let Some(t) = all.get("lm_head.weight") {
            // Tied: the embedding table is used; the saved copy is not uploaded.
            bar.inc(t.bytes.len() as u64);
        }
        // With Q8_0 the head is a quantized copy; the lookup keeps the float table.
        q8.then(|| upload_linear(be, &emb_t, 0, [v, d], dtype, true))
            .transpose()?
    } else {
        Some(upload_linear(
            be,
            &get("lm_head.weight"),
            0,
            [v, d],
            dtype,
            q8,
        )?)
    };
    bar.finish_and_clear();
    let unit_norms = match cfg.family {
        Family::FalconMamba { .. } => Some(UnitNorms {
            dt: be.upload(HostSlice::F32(&vec![1.0; r]), &[r])?,
            bc: be.upload(HostSlice::F32(&vec![1.0; n]), &[n])?,
        }),
        _ => None,
    };
    Ok(Weights {
        embedding,
        layers,
        norm_f,
        lm_head,
        unit_norms,
        dtype,
        q8,
    })
}

/// Whether an f32 tensor's finite values all round to finite f16s (|x| < 65520), so
/// that the q8 model's float matrices can be f16 without refusing the checkpoint; a
/// tensor of another dtype has nothing to check. (Non-finite values are the finiteness
/// check's to report.)
fn fits_f16(t: &Found<'_>) -> bool {
    t.dtype != SrcDType::F32
        || t.bytes.chunks_exact(4).all(|c| {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            x.abs() < 65520.0 || !x.is_finite()
        })
}

/// Refuses a config with more layers than the checkpoint's header holds, before the
/// list of expected tensors (proportional to the layer count) is built: a config.json
/// saying `num_hidden_layers: 100000000` must not allocate gigabytes of tensor names
/// for a 3 MB checkpoint. The number of distinct `layers.{i}.` indices in the header
/// bounds what the config may ask for.
fn check_layer_count(cfg: &MambaConfig, label: &str, names: &Names, all: &Index<'_>) -> Result<()> {
    let head = format!("{}layers.", names.prefix);
    let present: std::collections::BTreeSet<usize> = all
        .keys()
        .filter_map(|k| k.strip_prefix(&head)?.split('.').next()?.parse().ok())
        .collect();
    if cfg.num_layers > present.len() {
        return Err(Error::ConfigCheckpoint {
            file: label.into(),
            key: "num_hidden_layers",
            why: format!(
                "the config asks for {} layers, the checkpoint's header holds tensors of {} \
                 (`{head}{{i}}.*`)",
                cfg.num_layers,
                present.len()
            ),
        });
    }
    Ok(())
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "loading weights {bar:40} {binary_bytes}/{binary_total_bytes} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
