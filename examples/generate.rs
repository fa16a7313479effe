//! Text generation with a Mamba model on the CPU, wgpu or CUDA backend.
//!
//! ```text
//! cargo run --release --example generate -- [--model DIR] [--backend auto|cpu|wgpu|cuda]
//!     [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N] [--temperature T]
//!     [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R] [--seed S]
//!     [--ignore-eos] [--json]
//! ```
//!
//! `DIR` holds a Hugging Face `config.json`, `model.safetensors` (or a sharded index)
//! and optionally `tokenizer.json`. Without `--model` the small demo model embedded in
//! the binary (`examples/demo_model/`) is used. By default it samples (temperature 0.8,
//! top-k 40, seed 0); `--temperature 0` is greedy.
//! By default the text is streamed as it is generated, then the prefill and decode
//! speeds are printed; `--json` prints one JSON object at the end instead.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use mamba_gpu::model::{GenerateOptions, Generator, LoadOptions, MambaModel, SamplingParams};
use mamba_gpu::{Backend, CpuBackend, Error, Precision};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

#[derive(Debug, Parser)]
#[command(about = "Generate text with a Mamba model")]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json); default: the
    /// embedded demo model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Backend: auto tries cuda, then wgpu, then cpu.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    /// Prompt text (needs a tokenizer.json).
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// 0 = greedy. The default samples, because greedy decoding of a small model
    /// soon repeats itself.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// 1 = off.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// 1 = off.
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Print only one JSON object at the end.
    #[arg(long)]
    json: bool,
}

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The prompt used when none is given (the demo model was trained on Jane Austen).
const DEFAULT_PROMPT: &str = "It is a truth universally acknowledged, that";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> AnyResult<()> {
    match args.backend {
        BackendKind::Cpu => generate(cpu_backend(), args),
        BackendKind::Wgpu => generate(wgpu_backend()?, args),
        BackendKind::Cuda => generate(cuda_backend()?, args),
        BackendKind::Auto => {
            match cuda_backend() {
                Ok(be) => return generate(be, args),
                Err(e) => note(args, &e),
            }
            match wgpu_backend() {
                Ok(be) if is_software(&be) => note(
                    args,
                    &Error::BackendUnavailable {
                        backend: "wgpu",
                        why: "the only adapter is a software rasterizer; the CPU backend is faster"
                            .into(),
                    },
                ),
                Ok(be) => return generate(be, args),
                Err(e) => note(args, &e),
            }
            generate(cpu_backend(), args)
        }
    }
}

/// The CPU backend as users should run models: f32 scan arithmetic
/// ([`Precision::Fast`]), not the f64 reference.
fn cpu_backend() -> CpuBackend {
    CpuBackend::with_precision(Precision::Fast)
}

/// Is this adapter a CPU implementation (lavapipe, llvmpipe, WARP)?
#[cfg(feature = "wgpu")]
fn is_software(be: &mamba_gpu::wgpu::WgpuBackend) -> bool {
    be.adapter_info().device_type == ::wgpu::DeviceType::Cpu
}

#[cfg(not(feature = "wgpu"))]
fn is_software(_: &CpuBackend) -> bool {
    true
}

fn note(args: &Args, e: &Error) {
    if !args.json {
        eprintln!("auto: {e}");
    }
}

#[cfg(feature = "cuda")]
fn cuda_backend() -> mamba_gpu::Result<mamba_gpu::cuda::CudaBackend> {
    mamba_gpu::cuda::CudaBackend::new(0)
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend() -> mamba_gpu::Result<CpuBackend> {
    Err(Error::BackendUnavailable {
        backend: "cuda",
        why: "this binary was built without the `cuda` feature (rebuild with --features cuda)"
            .into(),
    })
}

#[cfg(feature = "wgpu")]
fn wgpu_backend() -> mamba_gpu::Result<mamba_gpu::wgpu::WgpuBackend> {
    mamba_gpu::wgpu::WgpuBackend::new()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_backend() -> mamba_gpu::Result<CpuBackend> {
    Err(Error::BackendUnavailable {
        backend: "wgpu",
        why: "this binary was built without the `wgpu` feature".into(),
    })
}

/// The demo model embedded in the binary (`examples/demo_model/`: a small Mamba trained
/// on Jane Austen): (config.json, model.safetensors, tokenizer.json).
fn demo_model() -> (&'static [u8], &'static [u8], &'static [u8]) {
    (
        include_bytes!("demo_model/config.json"),
        include_bytes!("demo_model/model.safetensors"),
        include_bytes!("demo_model/tokenizer.json"),
    )
}

#[cfg(feature = "tokenizers")]
type Tok = mamba_gpu::model::TextTokenizer;
#[cfg(not(feature = "tokenizers"))]
type Tok = ();

fn load<B: Backend>(be: B, args: &Args) -> AnyResult<(MambaModel<B>, Option<Tok>)> {
    let opts = LoadOptions {
        progress: !args.json,
        ..LoadOptions::default()
    };
    match &args.model {
        Some(dir) => {
            let model = MambaModel::load(be, dir, &opts)?;
            #[cfg(feature = "tokenizers")]
            let tok = {
                let path = dir.join("tokenizer.json");
                if path.exists() {
                    Some(Tok::from_file(&path)?)
                } else {
                    None
                }
            };
            #[cfg(not(feature = "tokenizers"))]
            let tok = None;
            Ok((model, tok))
        }
        None => {
            let (config, weights, tokenizer) = demo_model();
            let model = MambaModel::from_bytes(be, config, &[weights], &opts)?;
            #[cfg(feature = "tokenizers")]
            let tok = Some(Tok::from_bytes(tokenizer, "demo_model/tokenizer.json")?);
            #[cfg(not(feature = "tokenizers"))]
            let tok = {
                let _ = tokenizer;
                None
            };
            Ok((model, tok))
        }
    }
}

#[derive(Debug)]
struct NoTokenizer;

impl std::fmt::Display for NoTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--prompt needs a tokenizer.json next to the model (and the `tokenizers` \
             feature); pass --prompt-ids instead"
        )
    }
}

impl std::error::Error for NoTokenizer {}

fn encode(tok: &Option<Tok>, text: &str) -> AnyResult<Vec<u32>> {
    #[cfg(feature = "tokenizers")]
    if let Some(t) = tok {
        return Ok(t.encode(text)?);
    }
    let _ = (tok, text);
    Err(Box::new(NoTokenizer))
}

fn generate<B: Backend>(be: B, args: &Args) -> AnyResult<()> {
    let backend = be.name();
    let (model, tok) = load(be, args)?;
    let prompt_ids = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => encode(&tok, text)?,
        (None, None) => encode(&tok, DEFAULT_PROMPT)?,
    };
    let opts = GenerateOptions {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        max_new_tokens: args.max_new_tokens,
        stop_ids: Vec::new(),
        ignore_eos: args.ignore_eos,
    };
    opts.sampling.validate()?;
    let mut gen_ = Generator::new(&model, &prompt_ids, &opts)?;
    let mut out = std::io::stdout().lock();

    #[cfg(feature = "tokenizers")]
    let mut stream = tok.as_ref().map(|t| t.stream());
    if !args.json {
        #[cfg(feature = "tokenizers")]
        if let Some(t) = &tok {
            write!(out, "{}", t.decode(&prompt_ids)?)?;
        }
        if tok.is_none() {
            write!(out, "prompt ids {prompt_ids:?}\ngenerated ids:")?;
        }
        out.flush()?;
    }
    for id in gen_.by_ref() {
        let id = id?;
        if args.json {
            continue;
        }
        #[cfg(feature = "tokenizers")]
        if let Some(s) = stream.as_mut() {
            write!(out, "{}", s.push(id)?)?;
            out.flush()?;
            continue;
        }
        write!(out, " {id}")?;
        out.flush()?;
    }
    #[cfg(feature = "tokenizers")]
    if let (false, Some(s)) = (args.json, stream.as_mut()) {
        write!(out, "{}", s.finish()?)?;
    }
    let generated = gen_.generated().to_vec();
    let stats = gen_.stats();
    #[cfg(feature = "tokenizers")]
    let text = match &tok {
        Some(t) => Some(t.decode(&generated)?),
        None => None,
    };
    #[cfg(not(feature = "tokenizers"))]
    let text: Option<String> = None;
    if args.json {
        let j = serde_json::json!({
            "backend": backend,
            "prompt_ids": prompt_ids,
            "generated_ids": generated,
            "text": text,
            "prefill_tokens_per_s": stats.prefill_tokens_per_s(),
            "decode_tokens_per_s": stats.decode_tokens_per_s(),
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(out)?;
        writeln!(
            out,
            "\n[{backend}, weights {:?}] prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s",
            model.weight_dtype(),
            stats.prompt_tokens,
            stats.prefill_tokens_per_s(),
            generated.len(),
            stats.decode_tokens_per_s()
        )?;
    }
    Ok(())
}
