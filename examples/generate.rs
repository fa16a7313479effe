//! Text generation with a Mamba model on the CPU, wgpu or CUDA backend.
//!
//! ```text
//! cargo run --release --example generate -- [--model DIR|FILE.gguf] [--backend auto|cpu|wgpu|cuda]
//!     [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N] [--temperature T]
//!     [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R] [--seed S]
//!     [--ignore-eos] [--stop STRING]... [--json]
//! ```
//!
//! `DIR` holds a Hugging Face `config.json`, `model.safetensors` (or a sharded index)
//! and optionally `tokenizer.json`; `FILE.gguf` is a llama.cpp GGUF file (F32, F16 or
//! Q8_0), whose metadata holds the tokenizer. Without `--model` the small demo model embedded in
//! the binary (`examples/demo_model/`) is used. By default it samples (temperature 0.8,
//! top-k 40, seed 0); `--temperature 0` is greedy.
//! By default the text is streamed as it is generated, then the prefill and decode
//! speeds are printed; `--json` prints one JSON object at the end instead. `--stop`
//! (repeatable) ends the generation where the text contains that string (it is not
//! printed).
//!
//! The generation itself is the library's high-level API ([`TextModel::stream`]); a
//! model directory without a tokenizer.json, a GGUF file without a usable tokenizer
//! (or a build without the `tokenizers` feature) falls back to the token-id
//! [`Generator`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use mamba_gpu::model::{GenerateOptions, Generator, LoadOptions, MambaModel, SamplingParams};
#[cfg(feature = "tokenizers")]
use mamba_gpu::model::{TextModel, TextOptions};
use mamba_gpu::{Backend, Device};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WeightsKind {
    Auto,
    F32,
    F16,
    Bf16,
    Q8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Q8ActsKind {
    Auto,
    F32,
    Int8,
}

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
    /// Model directory (config.json, model.safetensors, tokenizer.json) or a .gguf
    /// file; default: the embedded demo model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Backend: auto tries cuda, then wgpu, then cpu.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    /// Weight storage: the checkpoint's dtype (auto), f32, f16, bf16, or q8 (the
    /// projections and the LM head quantized at load to Q8_0, 8-bit).
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsKind,
    /// With q8 weights: the activations in f32 or quantized to int8 (integer dot
    /// products); auto is the backend's default (int8 on the CPU, f32 on GPUs).
    #[arg(long, value_enum, default_value = "auto")]
    q8_activations: Q8ActsKind,
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
    /// Stop where the generated text contains STRING (not printed); repeatable.
    #[arg(long = "stop", value_name = "STRING")]
    stop: Vec<String>,
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
    let device = match args.backend {
        BackendKind::Cpu => Device::cpu(),
        BackendKind::Wgpu => Device::wgpu()?,
        BackendKind::Cuda => Device::cuda(0)?,
        BackendKind::Auto => {
            let (device, skipped) = Device::auto_with_report();
            if !args.json {
                for s in &skipped {
                    eprintln!("auto: skipped {s}");
                }
            }
            device
        }
    };
    let device = match args.q8_activations {
        Q8ActsKind::Auto => device,
        Q8ActsKind::F32 => device.with_q8_activations(mamba_gpu::Q8Activations::F32),
        Q8ActsKind::Int8 => device.with_q8_activations(mamba_gpu::Q8Activations::Int8),
    };
    if !args.json {
        eprintln!("device: {}", device.describe());
    }
    generate(device, args)
}

#[derive(Debug)]
struct NeedsTokenizer(&'static str);

impl std::fmt::Display for NeedsTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} needs a tokenizer: a tokenizer.json next to the model or a GGUF file with \
             one (and the `tokenizers` feature){}",
            self.0,
            if self.0 == "--stop" {
                ""
            } else {
                "; pass --prompt-ids instead"
            }
        )
    }
}

impl std::error::Error for NeedsTokenizer {}

fn load_options(args: &Args) -> LoadOptions {
    use mamba_gpu::model::WeightDType;
    LoadOptions {
        progress: !args.json,
        weight_dtype: match args.weights {
            WeightsKind::Auto => WeightDType::Auto,
            WeightsKind::F32 => WeightDType::F32,
            WeightsKind::F16 => WeightDType::F16,
            WeightsKind::Bf16 => WeightDType::BF16,
            WeightsKind::Q8 => WeightDType::Q8_0,
        },
        ..LoadOptions::default()
    }
}

fn sampling(args: &Args) -> SamplingParams {
    SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    }
}

/// `"q8_0 (+f16)"` for Q8_0 projections with f16 elsewhere, else the dtype's name.
fn weights_name((dtype, q8): (mamba_gpu::DType, bool)) -> String {
    if q8 {
        format!("q8_0 (+{})", dtype.name())
    } else {
        dtype.name().to_string()
    }
}

/// What a run reports at the end (both paths).
struct Outcome<'a> {
    backend: &'a str,
    /// The float dtype of the weights, and whether the projections are Q8_0.
    weights: (mamba_gpu::DType, bool),
    prompt_ids: &'a [u32],
    generated: &'a [u32],
    text: Option<&'a str>,
    stats: mamba_gpu::model::GenerationStats,
}

fn report(args: &Args, out: &mut impl Write, o: &Outcome<'_>) -> AnyResult<()> {
    if args.json {
        let j = serde_json::json!({
            "backend": o.backend,
            "prompt_ids": o.prompt_ids,
            "generated_ids": o.generated,
            "text": o.text,
            "prefill_tokens_per_s": o.stats.prefill_tokens_per_s(),
            "decode_tokens_per_s": o.stats.decode_tokens_per_s(),
        });
        writeln!(out, "{j}")?;
    } else {
        writeln!(out)?;
        writeln!(
            out,
            "\n[{}, weights {}] prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s",
            o.backend,
            weights_name(o.weights),
            o.stats.prompt_tokens,
            o.stats.prefill_tokens_per_s(),
            o.generated.len(),
            o.stats.decode_tokens_per_s()
        )?;
    }
    Ok(())
}

fn generate<B: Backend>(be: B, args: &Args) -> AnyResult<()> {
    let opts = load_options(args);
    #[cfg(feature = "tokenizers")]
    match &args.model {
        #[cfg(feature = "demo-model")]
        None => return generate_text(&TextModel::demo_with(be, &opts)?, args),
        Some(dir) if dir.join("tokenizer.json").exists() => {
            return generate_text(&TextModel::load_with(be, dir, &opts)?, args);
        }
        // A GGUF file: with its tokenizer if it has one this crate can use; without,
        // by token ids (its tokenizer's error is the message if text was asked for).
        Some(file) if !file.is_dir() => {
            match mamba_gpu::model::TextTokenizer::from_gguf_file(file) {
                Ok(tok) => {
                    let model = MambaModel::load(be, file, &opts)?;
                    return generate_text(&TextModel::from_parts(model, tok), args);
                }
                Err(e @ mamba_gpu::Error::Tokenizer { .. })
                    if args.prompt_ids.is_none() || !args.stop.is_empty() =>
                {
                    return Err(format!("{e}; pass --prompt-ids (and no --stop) instead").into());
                }
                Err(mamba_gpu::Error::Tokenizer { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        _ => {}
    }
    match &args.model {
        Some(dir) => generate_ids(MambaModel::load(be, dir, &opts)?, args),
        None => Err(
            "this build has no embedded demo model (features `tokenizers` and \
                     `demo-model`): pass --model DIR"
                .into(),
        ),
    }
}

/// The text path: the library's [`TextModel`] streams the pieces.
#[cfg(feature = "tokenizers")]
fn generate_text<B: Backend>(tm: &TextModel<B>, args: &Args) -> AnyResult<()> {
    let backend = tm.model().backend().name();
    let prompt_ids = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => tm.encode(text)?,
        (None, None) => tm.encode(DEFAULT_PROMPT)?,
    };
    let opts = TextOptions {
        sampling: sampling(args),
        max_new_tokens: args.max_new_tokens,
        stop_ids: Vec::new(),
        stop_strings: args.stop.clone(),
        ignore_eos: args.ignore_eos,
    };
    let mut pieces = tm.stream_ids(&prompt_ids, &opts)?;
    let mut out = std::io::stdout().lock();
    if !args.json {
        write!(out, "{}", tm.tokenizer().decode(&prompt_ids)?)?;
        out.flush()?;
    }
    let mut text = String::new();
    for piece in pieces.by_ref() {
        let piece = piece?;
        if !args.json {
            write!(out, "{piece}")?;
            out.flush()?;
        }
        text.push_str(&piece);
    }
    let outcome = Outcome {
        backend,
        weights: (tm.model().weight_dtype(), tm.model().weights().q8),
        prompt_ids: &prompt_ids,
        generated: pieces.generated(),
        text: Some(&text),
        stats: pieces.stats(),
    };
    report(args, &mut out, &outcome)
}

/// The token-id path, for a model directory without a tokenizer.
fn generate_ids<B: Backend>(model: MambaModel<B>, args: &Args) -> AnyResult<()> {
    if args.prompt.is_some() {
        return Err(Box::new(NeedsTokenizer("--prompt")));
    }
    if !args.stop.is_empty() {
        return Err(Box::new(NeedsTokenizer("--stop")));
    }
    let Some(prompt_ids) = args.prompt_ids.clone() else {
        return Err(Box::new(NeedsTokenizer("a text prompt (the default)")));
    };
    let opts = GenerateOptions {
        sampling: sampling(args),
        max_new_tokens: args.max_new_tokens,
        stop_ids: Vec::new(),
        ignore_eos: args.ignore_eos,
    };
    opts.sampling.validate()?;
    let mut gen_ = Generator::new(&model, &prompt_ids, &opts)?;
    let mut out = std::io::stdout().lock();
    if !args.json {
        write!(out, "prompt ids {prompt_ids:?}\ngenerated ids:")?;
        out.flush()?;
    }
    for id in gen_.by_ref() {
        let id = id?;
        if !args.json {
            write!(out, " {id}")?;
            out.flush()?;
        }
    }
    let outcome = Outcome {
        backend: model.backend().name(),
        weights: (model.weight_dtype(), model.weights().q8),
        prompt_ids: &prompt_ids,
        generated: gen_.generated(),
        text: None,
        stats: gen_.stats(),
    };
    report(args, &mut out, &outcome)
}
