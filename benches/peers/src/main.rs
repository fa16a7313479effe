//! mamba-gpu against its CPU peers on the same weights.
//!
//! 1. Writes a mamba-130m-shaped checkpoint with seeded random (but realistically
//!    scaled) weights in the Hugging Face layout (`config.json` + `model.safetensors`).
//! 2. Loads the same file into mamba-gpu (CPU backend, `Precision::Fast`; f32, f16 and
//!    bf16 weight storage), candle-transformers' `mamba` (CPU f32) and mamba-rs (CPU f32).
//! 3. Checks that the last-position logits of one prompt agree (relative L2), with
//!    mamba-gpu's exact f64 backend as the reference.
//! 4. Measures batch-1 decode tokens/s and one-pass prefill tokens/s, and prints one table.
//!
//! ```text
//! cargo run --release --ignore-rust-version --manifest-path benches/peers/Cargo.toml -- [options]
//!   --dir PATH        where the checkpoint goes (default: $TMPDIR/mamba-peers-130m)
//!   --steps N         decode steps per run (64)
//!   --decode-prompt N prompt length before decoding (16)
//!   --prefill N       one-pass prefill length (512)
//!   --check N         prompt length of the logits check (32)
//!   --runs N          timed runs, the median is reported (3)
//!   --candle-prefill N  token-by-token prefill length for candle (128; 0 = skip)
//!   --profile         also time mamba-gpu op by op (a timing wrapper Backend)
//!   --only LIST       comma list among ours,candle,mambars (all)
//!   --dtypes LIST     mamba-gpu weight dtypes among f32,f16,bf16 (all)
//!   --micro           only time the scan and the decode matmul against SIMD rewrites (src/micro.rs)
//!   --reuse           keep an existing checkpoint in --dir (same seed) instead of rewriting it
//!   --mamba2          instead: Mamba-2 130m-shaped, ours against candle's mamba2 (src/mamba2.rs)
//!   --write-hf DIR    only write the checkpoint (config.json + model.safetensors) to DIR, and
//!                     exit (for llama.cpp's convert_hf_to_gguf.py: tools/llama_cpp_peer.sh)
//!   --json FILE       also write the results as JSON: per row the tok/s (median, best), the
//!                     decode prompt ids and the greedy ids of the last decode run
//! ```

mod mamba2;
mod micro;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mamba_gpu::model::{LoadOptions, MambaModel, WeightDType};
use mamba_gpu::ops::call::*;
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice, HostVec, Precision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------- shape

const D_MODEL: usize = 768;
const N_LAYER: usize = 24;
const D_INNER: usize = 1536;
const D_STATE: usize = 16;
const D_CONV: usize = 4;
const DT_RANK: usize = 48;
const VOCAB: usize = 50280;
const SEED: u64 = 0x6d61_6d62_61;

// ---------------------------------------------------------------- options

struct Opts {
    dir: PathBuf,
    steps: usize,
    decode_prompt: usize,
    prefill: usize,
    check: usize,
    runs: usize,
    candle_prefill: usize,
    profile: bool,
    only: Vec<String>,
    dtypes: Vec<String>,
    reuse: bool,
    micro: bool,
    mamba2: bool,
    write_hf: Option<PathBuf>,
    json: Option<PathBuf>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        dir: std::env::temp_dir().join("mamba-peers-130m"),
        steps: 64,
        decode_prompt: 16,
        prefill: 512,
        check: 32,
        runs: 3,
        candle_prefill: 128,
        profile: false,
        only: vec!["ours".into(), "candle".into(), "mambars".into()],
        dtypes: vec!["f32".into(), "f16".into(), "bf16".into()],
        reuse: false,
        micro: false,
        mamba2: false,
        write_hf: None,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(args.next().expect("--dir needs a path")),
            "--steps" => o.steps = num("--steps"),
            "--decode-prompt" => o.decode_prompt = num("--decode-prompt").max(1),
            "--prefill" => o.prefill = num("--prefill"),
            "--check" => o.check = num("--check").max(1),
            "--runs" => o.runs = num("--runs").max(1),
            "--candle-prefill" => o.candle_prefill = num("--candle-prefill"),
            "--profile" => o.profile = true,
            "--reuse" => o.reuse = true,
            "--micro" => o.micro = true,
            "--mamba2" => o.mamba2 = true,
            "--write-hf" => {
                o.write_hf = Some(PathBuf::from(args.next().expect("--write-hf needs a path")))
            }
            "--json" => o.json = Some(PathBuf::from(args.next().expect("--json needs a path"))),
            "--dtypes" => {
                o.dtypes = args
                    .next()
                    .expect("--dtypes needs a list")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--only" => {
                o.only = args
                    .next()
                    .expect("--only needs a list")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "-h" | "--help" => {
                println!("see the doc comment of benches/peers/src/main.rs");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

// ---------------------------------------------------------------- weights

/// Normal samples by Box–Muller.
struct Normal(ChaCha8Rng);

impl Normal {
    fn fill(&mut self, n: usize, std: f32) -> Vec<f32> {
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let u1: f32 = 1.0 - self.0.random::<f32>(); // (0, 1]
            let u2: f32 = self.0.random::<f32>();
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
            v.push(r * c);
            v.push(r * s);
        }
        v.truncate(n);
        v
    }
}

/// The tensors of the checkpoint, HF names, row-major f32.
fn random_checkpoint(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut g = Normal(ChaCha8Rng::seed_from_u64(seed));
    let mut t = Vec::new();
    t.push((
        "backbone.embeddings.weight".to_string(),
        vec![VOCAB, D_MODEL],
        g.fill(VOCAB * D_MODEL, 0.02),
    ));
    let (e, n, r, d) = (D_INNER, D_STATE, DT_RANK, D_MODEL);
    for l in 0..N_LAYER {
        let p = |s: &str| format!("backbone.layers.{l}.{s}");
        // A_log = log(1..N) per row (S4D-real init).
        let a_log: Vec<f32> = (0..e)
            .flat_map(|_| (1..=n).map(|j| (j as f32).ln()))
            .collect();
        // dt = exp(U(log 1e-3, log 1e-1)); bias = softplus⁻¹(dt) = dt + log(−expm1(−dt)).
        let dt_bias: Vec<f32> = (0..e)
            .map(|_| {
                let u: f64 = g.0.random::<f64>();
                let dt = (u * (0.1f64.ln() - 0.001f64.ln()) + 0.001f64.ln()).exp();
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })
            .collect();
        let norm: Vec<f32> = g.fill(d, 0.05).iter().map(|x| 1.0 + x).collect();
        t.push((p("norm.weight"), vec![d], norm));
        t.push((p("mixer.A_log"), vec![e, n], a_log));
        t.push((p("mixer.D"), vec![e], vec![1.0; e]));
        t.push((
            p("mixer.in_proj.weight"),
            vec![2 * e, d],
            g.fill(2 * e * d, 1.0 / (d as f32).sqrt()),
        ));
        t.push((
            p("mixer.conv1d.weight"),
            vec![e, 1, D_CONV],
            g.fill(e * D_CONV, 0.3),
        ));
        t.push((p("mixer.conv1d.bias"), vec![e], g.fill(e, 0.05)));
        t.push((
            p("mixer.x_proj.weight"),
            vec![r + 2 * n, e],
            g.fill((r + 2 * n) * e, 1.0 / (e as f32).sqrt()),
        ));
        t.push((
            p("mixer.dt_proj.weight"),
            vec![e, r],
            g.fill(e * r, 0.1 / (r as f32).sqrt()),
        ));
        t.push((p("mixer.dt_proj.bias"), vec![e], dt_bias));
        t.push((
            p("mixer.out_proj.weight"),
            vec![d, e],
            g.fill(d * e, 1.0 / (e as f32).sqrt() / (N_LAYER as f32).sqrt()),
        ));
    }
    let norm_f: Vec<f32> = g.fill(d, 0.05).iter().map(|x| 1.0 + x).collect();
    t.push(("backbone.norm_f.weight".to_string(), vec![d], norm_f));
    t
}

const CONFIG_JSON: &str = r#"{
  "model_type": "mamba",
  "architectures": ["MambaForCausalLM"],
  "hidden_size": 768,
  "num_hidden_layers": 24,
  "intermediate_size": 1536,
  "state_size": 16,
  "conv_kernel": 4,
  "time_step_rank": 48,
  "expand": 2,
  "vocab_size": 50280,
  "hidden_act": "silu",
  "use_bias": false,
  "use_conv_bias": true,
  "layer_norm_epsilon": 1e-5,
  "rms_norm": true,
  "residual_in_fp32": true,
  "tie_word_embeddings": true,
  "pad_vocab_size_multiple": 8,
  "bos_token_id": 0,
  "eos_token_id": 0,
  "pad_token_id": 0
}
"#;

fn write_checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create checkpoint dir");
    let t0 = Instant::now();
    let tensors = random_checkpoint(SEED);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, v)| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, shape, b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .expect("tensor view");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("write model.safetensors");
    std::fs::write(dir.join("config.json"), CONFIG_JSON).expect("write config.json");
    eprintln!(
        "wrote {} ({:.1} s)",
        dir.join("model.safetensors").display(),
        t0.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- helpers

/// (median, best) of tokens/s rates.
fn stats(v: Vec<f64>) -> (f64, f64) {
    let best = v.iter().cloned().fold(f64::MIN, f64::max);
    (median(v), best)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "logit vectors differ in length");
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den).sqrt()
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn prompt(len: usize, salt: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(0xbeef ^ salt);
    (0..len)
        .map(|_| rng.random_range(0..VOCAB as u32))
        .collect()
}

/// Per-implementation results.
#[derive(Default, Clone)]
struct Row {
    name: String,
    /// The weight dtype for our rows ("f32", "f16", "bf16"), empty for the peers.
    tag: String,
    decode: Option<(f64, f64)>,
    prefill: Option<(f64, f64)>,
    prefill_note: String,
    load_s: f64,
    logits: Vec<f32>,
    decode_ids: Vec<u32>,
}

// ---------------------------------------------------------------- ours

fn ours_load<B: Backend>(be: B, dir: &Path, wd: WeightDType) -> MambaModel<B> {
    MambaModel::load(
        be,
        dir,
        &LoadOptions {
            weight_dtype: wd,
            progress: false,
            ..LoadOptions::default()
        },
    )
    .expect("mamba-gpu load")
}

fn ours_bench<B: Backend>(name: &str, tag: &str, m: &MambaModel<B>, o: &Opts, load_s: f64) -> Row {
    let check = prompt(o.check, 1);
    let logits = m.logits_for(&check).expect("logits");
    // Decode: a short prompt, then greedy steps (argmax of the full logits each step).
    let dp = prompt(o.decode_prompt, 2);
    let mut rates = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..o.runs {
        let mut st = m.new_state(1).unwrap();
        m.prefill(&mut st, &[&dp]).unwrap();
        ids.clear();
        let t = Instant::now();
        for _ in 0..o.steps {
            let id = m.greedy_ids(&mut st).unwrap()[0];
            ids.push(id);
            m.step(&mut st, &[id]).unwrap();
        }
        rates.push(o.steps as f64 / t.elapsed().as_secs_f64());
    }
    let decode = stats(rates);
    let mut prefill = None;
    if o.prefill > 0 {
        let pp = prompt(o.prefill, 3);
        let mut rates = Vec::new();
        for _ in 0..o.runs {
            let mut st = m.new_state(1).unwrap();
            let t = Instant::now();
            m.prefill(&mut st, &[&pp]).unwrap();
            let _ = m.download_logits(&st).unwrap();
            rates.push(o.prefill as f64 / t.elapsed().as_secs_f64());
        }
        prefill = Some(stats(rates));
    }
    eprintln!("{name}: decode {decode:.1?} tok/s, prefill {prefill:?}");
    Row {
        name: name.into(),
        tag: tag.into(),
        decode: Some(decode),
        prefill,
        prefill_note: format!("one pass, {} tokens", o.prefill),
        load_s,
        logits,
        decode_ids: ids,
    }
}

// ---------------------------------------------------------------- candle

fn candle_bench(dir: &Path, o: &Opts) -> candle_core::Result<Row> {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::mamba::{Config, Model, State};
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let mut ts = candle_core::safetensors::load(dir.join("model.safetensors"), &dev)?;
    // candle follows the state-spaces names: `embedding`, not HF's `embeddings`.
    let emb = ts.remove("backbone.embeddings.weight").expect("embedding");
    ts.insert("backbone.embedding.weight".into(), emb);
    let vb = candle_nn::VarBuilder::from_tensors(ts, candle_core::DType::F32, &dev);
    let cfg = Config {
        d_model: D_MODEL,
        n_layer: N_LAYER,
        vocab_size: VOCAB,
        pad_vocab_size_multiple: 8,
    };
    let model = Model::new(&cfg, vb.pp("backbone"))?;
    let load_s = t0.elapsed().as_secs_f64();
    let step = |st: &mut State, id: u32| -> candle_core::Result<Vec<f32>> {
        let x = Tensor::new(&[id], &dev)?;
        model.forward(&x, st)?.squeeze(0)?.to_vec1::<f32>()
    };
    let check = prompt(o.check, 1);
    let mut st = State::new(1, &cfg, candle_core::DType::F32, &dev)?;
    let mut logits = Vec::new();
    for &id in &check {
        logits = step(&mut st, id)?;
    }
    let dp = prompt(o.decode_prompt, 2);
    let mut rates = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..o.runs {
        let mut st = State::new(1, &cfg, candle_core::DType::F32, &dev)?;
        let mut last = Vec::new();
        for &id in &dp {
            last = step(&mut st, id)?;
        }
        ids.clear();
        let t = Instant::now();
        for _ in 0..o.steps {
            let id = argmax(&last);
            ids.push(id);
            last = step(&mut st, id)?;
        }
        rates.push(o.steps as f64 / t.elapsed().as_secs_f64());
    }
    let decode = stats(rates);
    let mut prefill = None;
    if o.candle_prefill > 0 {
        let pp = prompt(o.candle_prefill, 3);
        let mut st = State::new(1, &cfg, candle_core::DType::F32, &dev)?;
        let t = Instant::now();
        for &id in &pp {
            let _ = step(&mut st, id)?;
        }
        let r = o.candle_prefill as f64 / t.elapsed().as_secs_f64();
        prefill = Some((r, r));
    }
    eprintln!("candle: decode {decode:.1?} tok/s, token-by-token prefill {prefill:?}");
    Ok(Row {
        name: "candle-transformers 0.9.2 mamba, f32".into(),
        tag: String::new(),
        decode: Some(decode),
        prefill,
        prefill_note: format!(
            "no prompt path: token by token, {} tokens, 1 run",
            o.candle_prefill
        ),
        load_s,
        logits,
        decode_ids: ids,
    })
}

// ---------------------------------------------------------------- mamba-rs

fn mambars_bench(dir: &Path, o: &Opts, packed: bool) -> Row {
    use mamba_rs::MambaBackbone;
    use mamba_rs::hf::embed::{embed_lookup, lm_head_logits};
    let t0 = Instant::now();
    let m = mamba_rs::hf::load_mamba(dir).expect("mamba-rs load");
    let dm = m.cfg.d_model;
    let mut bb = MambaBackbone::new(m.weights, m.cfg, dm).expect("backbone");
    if packed {
        bb.pack_for_decode();
    }
    let embed = m.embed;
    let vocab = m.vocab_size;
    let padded = embed.len() / dm;
    let load_s = t0.elapsed().as_secs_f64();
    let mut head_scratch = vec![0f32; padded];
    let mut head = |h: &[f32]| -> Vec<f32> {
        let mut l = vec![0f32; vocab];
        lm_head_logits(&mut l, h, &embed, vocab, padded, dm, &mut head_scratch);
        l
    };
    let seq = |bb: &MambaBackbone,
               ids: &[u32],
               st: &mut mamba_rs::MambaState,
               sc: &mut mamba_rs::MambaScratch|
     -> Vec<f32> {
        let mut inp = vec![0f32; ids.len() * dm];
        for (t, &id) in ids.iter().enumerate() {
            inp[t * dm..(t + 1) * dm].copy_from_slice(embed_lookup(&embed, id, dm, vocab));
        }
        let mut out = vec![0f32; ids.len() * dm];
        bb.forward_sequence(&inp, &mut out, st, sc, ids.len());
        out[(ids.len() - 1) * dm..].to_vec()
    };
    let check = prompt(o.check, 1);
    let mut st = bb.alloc_state();
    let mut sc = bb.alloc_scratch();
    let h = seq(&bb, &check, &mut st, &mut sc);
    let logits = head(&h);

    let dp = prompt(o.decode_prompt, 2);
    let mut rates = Vec::new();
    let mut ids = Vec::new();
    let mut out = vec![0f32; dm];
    for _ in 0..o.runs {
        let mut st = bb.alloc_state();
        let h = seq(&bb, &dp, &mut st, &mut sc);
        let mut last = head(&h);
        ids.clear();
        let t = Instant::now();
        for _ in 0..o.steps {
            let id = argmax(&last);
            ids.push(id);
            let x = embed_lookup(&embed, id, dm, vocab);
            bb.forward_step(x, &mut out, &mut st, &mut sc);
            last = head(&out);
        }
        rates.push(o.steps as f64 / t.elapsed().as_secs_f64());
    }
    let decode = stats(rates);
    let mut prefill = None;
    if o.prefill > 0 && !packed {
        let pp = prompt(o.prefill, 3);
        let mut rates = Vec::new();
        for _ in 0..o.runs {
            let mut st = bb.alloc_state();
            let t = Instant::now();
            let h = seq(&bb, &pp, &mut st, &mut sc);
            let _ = head(&h);
            rates.push(o.prefill as f64 / t.elapsed().as_secs_f64());
        }
        prefill = Some(stats(rates));
    }
    let name = if packed {
        "mamba-rs 0.8.2, f32, pack_for_decode"
    } else {
        "mamba-rs 0.8.2, f32 (gemm-blas)"
    };
    eprintln!("{name}: decode {decode:.1?} tok/s, prefill {prefill:?}");
    Row {
        name: name.into(),
        tag: String::new(),
        decode: Some(decode),
        prefill,
        prefill_note: if packed {
            "same prompt path as above".into()
        } else {
            format!("forward_sequence, {} tokens", o.prefill)
        },
        load_s,
        logits,
        decode_ids: ids,
    }
}

// ---------------------------------------------------------------- op timing

/// A Backend that forwards to the CPU backend and adds up the wall time of every call,
/// per op (matmuls per (n, k) shape).
struct Timed {
    inner: CpuBackend,
    acc: RefCell<BTreeMap<String, (Duration, u64)>>,
}

impl Timed {
    fn record<T>(&self, key: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        let dt = t.elapsed();
        let mut acc = self.acc.borrow_mut();
        let e = acc.entry(key()).or_default();
        e.0 += dt;
        e.1 += 1;
        r
    }

    fn take(&self) -> BTreeMap<String, (Duration, u64)> {
        std::mem::take(&mut *self.acc.borrow_mut())
    }
}

impl Backend for Timed {
    type Buffer = <CpuBackend as Backend>::Buffer;
    fn name(&self) -> &'static str {
        "timed-cpu"
    }
    fn supports_weight_dtype(&self, dtype: DType) -> bool {
        self.inner.supports_weight_dtype(dtype)
    }
    fn zeros(&self, dtype: DType, shape: &[usize]) -> mamba_gpu::Result<Self::Buffer> {
        self.record(|| "alloc zeros".into(), || self.inner.zeros(dtype, shape))
    }
    fn upload(&self, data: HostSlice<'_>, shape: &[usize]) -> mamba_gpu::Result<Self::Buffer> {
        self.record(|| "upload".into(), || self.inner.upload(data, shape))
    }
    fn write(&self, data: HostSlice<'_>, buf: &mut Self::Buffer) -> mamba_gpu::Result<()> {
        self.record(|| "write".into(), || self.inner.write(data, buf))
    }
    fn download(&self, buf: &Self::Buffer) -> mamba_gpu::Result<HostVec> {
        self.record(|| "download".into(), || self.inner.download(buf))
    }
    fn flush(&self) -> mamba_gpu::Result<()> {
        self.inner.flush()
    }
    // The checked calls keep their parameters private to the crate, so the ops are
    // timed by name (a matmul's shape is not visible from here).
    fn embedding(&self, call: EmbeddingCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "embedding".into(), || self.inner.embedding(call))
    }
    fn matmul(&self, call: MatmulCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "matmul".into(), || self.inner.matmul(call))
    }
    fn rms_norm(&self, call: NormCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(
            || "rms_norm (+residual)".into(),
            || self.inner.rms_norm(call),
        )
    }
    fn causal_conv1d(&self, call: ConvCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "causal_conv1d".into(), || self.inner.causal_conv1d(call))
    }
    fn causal_conv1d_update(
        &self,
        call: ConvUpdateCall<'_, Self::Buffer>,
    ) -> mamba_gpu::Result<()> {
        self.record(
            || "causal_conv1d_update".into(),
            || self.inner.causal_conv1d_update(call),
        )
    }
    fn selective_scan(&self, call: ScanCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(
            || "selective_scan".into(),
            || self.inner.selective_scan(call),
        )
    }
    fn selective_state_update(&self, call: StepCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(
            || "selective_state_update".into(),
            || self.inner.selective_state_update(call),
        )
    }
    fn has_ssd_scan(&self) -> bool {
        self.inner.has_ssd_scan()
    }
    fn ssd_scan(&self, call: SsdCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "ssd_scan".into(), || self.inner.ssd_scan(call))
    }
    fn fused_step_max_weight_bytes(&self) -> Option<u64> {
        self.inner.fused_step_max_weight_bytes()
    }
    fn mixer_in(&self, call: MixerInCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "mixer_in (fused)".into(), || self.inner.mixer_in(call))
    }
    fn x_proj(&self, call: XProjCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "x_proj (fused)".into(), || self.inner.x_proj(call))
    }
    fn ssm_step(&self, call: SsmStepCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "ssm_step (fused)".into(), || self.inner.ssm_step(call))
    }
    fn elementwise(&self, call: ElementwiseCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "elementwise".into(), || self.inner.elementwise(call))
    }
    fn argmax(&self, call: ArgmaxCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "argmax".into(), || self.inner.argmax(call))
    }
    fn copy(&self, call: CopyCall<'_, Self::Buffer>) -> mamba_gpu::Result<()> {
        self.record(|| "copy".into(), || self.inner.copy(call))
    }
}

fn print_profile(title: &str, total: Duration, acc: &BTreeMap<String, (Duration, u64)>) {
    let mut v: Vec<_> = acc.iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0));
    let sum: Duration = v.iter().map(|(_, (d, _))| *d).sum();
    println!(
        "\n{title}: wall {:.1} ms, inside ops {:.1} ms",
        ms(total),
        ms(sum)
    );
    println!("| op | calls | ms | % of wall |");
    println!("|---|---:|---:|---:|");
    for (k, (d, n)) in v {
        println!(
            "| {k} | {n} | {:.2} | {:.1} |",
            ms(*d),
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn profile_ours(dir: &Path, o: &Opts, wd: WeightDType, label: &str) {
    let be = Timed {
        inner: CpuBackend::with_precision(Precision::Fast),
        acc: RefCell::new(BTreeMap::new()),
    };
    let m = ours_load(be, dir, wd);
    let dp = prompt(o.decode_prompt, 2);
    let mut st = m.new_state(1).unwrap();
    m.prefill(&mut st, &[&dp]).unwrap();
    // warm-up steps, then the measured ones
    for _ in 0..4 {
        let id = m.greedy_ids(&mut st).unwrap()[0];
        m.step(&mut st, &[id]).unwrap();
    }
    m.backend().take();
    let t = Instant::now();
    for _ in 0..o.steps {
        let id = m.greedy_ids(&mut st).unwrap()[0];
        m.step(&mut st, &[id]).unwrap();
    }
    let total = t.elapsed();
    let acc = m.backend().take();
    print_profile(
        &format!(
            "ours {label}: decode, {} steps (per step {:.2} ms)",
            o.steps,
            ms(total) / o.steps as f64
        ),
        total,
        &acc,
    );
    if o.prefill > 0 {
        let pp = prompt(o.prefill, 3);
        let mut st = m.new_state(1).unwrap();
        m.prefill(&mut st, &[&pp]).unwrap(); // warm-up
        m.backend().take();
        let mut st = m.new_state(1).unwrap();
        let t = Instant::now();
        m.prefill(&mut st, &[&pp]).unwrap();
        let _ = m.download_logits(&st).unwrap();
        let total = t.elapsed();
        let acc = m.backend().take();
        print_profile(
            &format!("ours {label}: prefill, {} tokens in one pass", o.prefill),
            total,
            &acc,
        );
    }
}

// ---------------------------------------------------------------- main

/// Weights a batch-1 decode step reads: every projection of every layer, the lm_head
/// (the tied embedding) once, at `bytes` per weight (norms, conv taps, A, D and the
/// states are < 2 % more and not counted).
fn decode_weight_bytes(bytes: usize) -> f64 {
    let per_layer = 2 * D_INNER * D_MODEL
        + (DT_RANK + 2 * D_STATE) * D_INNER
        + D_INNER * DT_RANK
        + D_MODEL * D_INNER;
    ((N_LAYER * per_layer + VOCAB * D_MODEL) * bytes) as f64
}

/// A STREAM-like triad `a = b + 3·c` in f32 on `threads` threads (each its own third of
/// the arrays), over three 256 MiB arrays (beyond any last-level cache here). GB/s in
/// STREAM's convention, 12 bytes an element (the write-allocate read of `a` is not
/// counted). Median and best of `runs`.
fn triad_gbs(threads: usize, runs: usize) -> (f64, f64) {
    const N: usize = 64 << 20;
    let (b, c) = (vec![1f32; N], vec![2f32; N]);
    let mut a = vec![0f32; N];
    let per = N.div_ceil(threads.max(1));
    let mut rates = Vec::new();
    for _ in 0..runs + 1 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for ((a, b), c) in a.chunks_mut(per).zip(b.chunks(per)).zip(c.chunks(per)) {
                s.spawn(move || {
                    for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + 3.0 * c;
                    }
                });
            }
        });
        rates.push(12.0 * N as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(&a);
    rates.remove(0); // the first pass also faults the pages of `a` in
    stats(rates)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let o = parse_opts();
    if o.micro {
        micro::run(o.runs.max(3));
        return;
    }
    if o.mamba2 {
        mamba2::run(&o);
        return;
    }
    if let Some(dir) = &o.write_hf {
        write_checkpoint(dir);
        return;
    }
    let want = |s: &str| o.only.iter().any(|x| x == s);
    let load_start = load_avg();
    if !(o.reuse && o.dir.join("model.safetensors").exists() && o.dir.join("config.json").exists())
    {
        write_checkpoint(&o.dir);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "threads available: {threads}; rayon pool: {}",
        rayon_threads()
    );

    let triad = triad_gbs(threads, o.runs.max(3));
    eprintln!("triad ({threads} threads): {:.1} GB/s median, {:.1} best", triad.0, triad.1);

    let mut rows: Vec<Row> = Vec::new();
    let mut reference: Option<Vec<f32>> = None;
    if want("ours") {
        // The exact f64 backend: the reference logits.
        {
            let m = ours_load(CpuBackend::new(), &o.dir, WeightDType::F32);
            reference = Some(m.logits_for(&prompt(o.check, 1)).expect("reference logits"));
        }
        for (wd, label) in [
            (WeightDType::F32, "f32"),
            (WeightDType::F16, "f16"),
            (WeightDType::BF16, "bf16"),
        ] {
            if !o.dtypes.iter().any(|d| d == label) {
                continue;
            }
            let t0 = Instant::now();
            let m = ours_load(CpuBackend::with_precision(Precision::Fast), &o.dir, wd);
            let load_s = t0.elapsed().as_secs_f64();
            rows.push(ours_bench(
                &format!("mamba-gpu (ours), CPU Fast, {label} weights"),
                label,
                &m,
                &o,
                load_s,
            ));
        }
    }
    if want("candle") {
        rows.push(candle_bench(&o.dir, &o).expect("candle"));
    }
    if want("mambars") {
        rows.push(mambars_bench(&o.dir, &o, false));
        rows.push(mambars_bench(&o.dir, &o, true));
    }
    let load_end = load_avg();

    println!("\n## Throughput (batch 1, CPU, {threads} threads)\n");
    println!(
        "130m shape (d_model {D_MODEL}, {N_LAYER} layers, d_inner {D_INNER}, d_state {D_STATE}, vocab {VOCAB}, tied), seeded random weights. \
         Decode: {} greedy steps after a {}-token prompt, full logits + argmax per step; prefill: last-position logits of a prompt. Median and best of {} runs.\n",
        o.steps, o.decode_prompt, o.runs
    );
    println!(
        "Memory: STREAM-like f32 triad on {threads} threads {:.1} GB/s median, {:.1} best. decode GB/s = weight bytes a step ({:.0} MB f32, {:.0} MB f16/bf16) × median tok/s; of triad = that / the triad's median.\n",
        triad.0,
        triad.1,
        decode_weight_bytes(4) / 1e6,
        decode_weight_bytes(2) / 1e6
    );
    println!(
        "| implementation | decode tok/s median | decode best | decode GB/s | of triad | prefill tok/s median | prefill best | prefill | load s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in &rows {
        let f = |x: Option<(f64, f64)>, best: bool| {
            x.map_or("n/a".into(), |v| {
                format!("{:.1}", if best { v.1 } else { v.0 })
            })
        };
        let bytes = if r.name.contains("f16") { 2 } else { 4 };
        let gbs = r.decode.map(|d| d.0 * decode_weight_bytes(bytes) / 1e9);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.name,
            f(r.decode, false),
            f(r.decode, true),
            gbs.map_or("n/a".into(), |g| format!("{g:.1}")),
            gbs.map_or("n/a".into(), |g| format!("{:.2}", g / triad.0)),
            f(r.prefill, false),
            f(r.prefill, true),
            r.prefill_note,
            r.load_s
        );
    }
    println!("\nload average (1/5/15 min) at start: {load_start}; at end: {load_end}");

    println!(
        "\n## Logits agreement ({}-token prompt, last position)\n",
        o.check
    );
    let mut refs: Vec<(String, Vec<f32>)> = Vec::new();
    if let Some(r) = &reference {
        refs.push(("ours exact f64 (reference)".into(), r.clone()));
    }
    for r in &rows {
        if !r.name.contains("pack_for_decode") {
            refs.push((r.name.clone(), r.logits.clone()));
        }
    }
    println!("| a | b | rel L2 ‖a−b‖/‖b‖ | max abs | argmax a / b |");
    println!("|---|---|---:|---:|---|");
    for i in 0..refs.len() {
        for j in 0..i {
            let (na, a) = &refs[i];
            let (nb, b) = &refs[j];
            println!(
                "| {na} | {nb} | {:.3e} | {:.3e} | {} / {} |",
                rel_l2(a, b),
                max_abs(a, b),
                argmax(a),
                argmax(b)
            );
        }
    }
    if let Some((_, r)) = refs.first() {
        let n = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() / (r.len() as f64).sqrt();
        println!("\nreference logits: rms {n:.4}, argmax {}", argmax(r));
    }
    println!("\n## Greedy decode ids (first 16 of each)\n");
    for r in &rows {
        let ids: Vec<String> = r
            .decode_ids
            .iter()
            .take(16)
            .map(|x| x.to_string())
            .collect();
        println!("- {}: {}", r.name, ids.join(" "));
    }

    if let Some(path) = &o.json {
        write_json(path, &o, &rows, threads);
    }

    if o.profile && want("ours") {
        println!("\n## mamba-gpu op timing (timing wrapper backend, one thread of calls)");
        for (wd, label) in [
            (WeightDType::F32, "f32"),
            (WeightDType::F16, "f16"),
            (WeightDType::BF16, "bf16"),
        ] {
            if o.dtypes.iter().any(|d| d == label) {
                profile_ours(&o.dir, &o, wd, label);
            }
        }
    }
}

/// The rows as JSON, for scripts (tools/llama_cpp_peer.sh).
fn write_json(path: &Path, o: &Opts, rows: &[Row], threads: usize) {
    use serde_json::json;
    let pair =
        |x: Option<(f64, f64)>| x.map(|(median, best)| json!({"median": median, "best": best}));
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "dtype": r.tag,
                "decode_tok_s": pair(r.decode),
                "prefill_tok_s": pair(r.prefill),
                "decode_ids": r.decode_ids,
            })
        })
        .collect();
    let doc = json!({
        "threads": threads,
        "runs": o.runs,
        "steps": o.steps,
        "prefill": o.prefill,
        "decode_prompt": prompt(o.decode_prompt, 2),
        "rows": rows,
    });
    let text = serde_json::to_string_pretty(&doc).expect("serialize json");
    std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default (all cores)".into())
}
