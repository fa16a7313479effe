//! Throughput tables: the selective scan (time, achieved GB/s and the ratio to the memory
//! floor), Mamba-2's scan (`ssd.rs`), then whole models with random weights in the shapes of mamba-130m,
//! mamba-2.8b and mamba2-130m (prefill and decode tokens/s, and on wgpu the dependent
//! dispatches per token). `--json` prints one object per row instead, for scripts.
//!
//! ```text
//! cargo run --release --example bench -- --backend wgpu
//! cargo run --release --example bench -- --backend cpu --shapes 1x1536x2048x16 --models 130m --prefill 1x512
//! cargo run --release --example bench -- --backend wgpu --json --models 130m,mamba2-130m
//! ```
//!
//! The floor counts each tensor read or written once, f32 I/O, input-dependent B/C, with
//! D, z and delta_bias: `bytes = 4·batch·L·(4·dim + 2·N) + 4·(dim·N + 2·dim)`.
//! Each timed run ends by downloading the small final state, which waits for the work.

mod ssd;

use std::time::Instant;

use clap::Parser;
use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo};
use mamba_gpu::{Backend, CpuBackend, DType, HostSlice, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(about = "Selective-scan throughput table")]
struct Args {
    /// cpu | wgpu | cuda
    #[arg(long, default_value = "wgpu")]
    backend: String,
    /// Scan shapes as BATCHxDIMxLxN, comma separated, or none.
    #[arg(
        long,
        default_value = "1x768x2048x16,1x1536x2048x16,4x1536x2048x16,1x2560x8192x16"
    )]
    shapes: String,
    /// Mamba-2 scan shapes as BATCHxHEADSxPxLxN (one group), comma separated, or none:
    /// by default mamba2-130m's (24 heads of 64, N 128) and mamba2-2.7b's (80 heads).
    #[arg(long, default_value = "1x24x64x2048x128,1x80x64x2048x128")]
    ssd_shapes: String,
    /// Timed repetitions per shape (after one warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Token-major layout instead of the official channel-major one.
    #[arg(long)]
    token_major: bool,
    /// Peak memory bandwidth of the device in GB/s (e.g. 3350 for an H100 SXM), for the
    /// ratio to the memory floor; also read from `MAMBA_GPU_PEAK_GBS`.
    #[arg(long)]
    peak_gbs: Option<f64>,
    /// Model shapes to time, comma separated: 130m, 2.8b, mamba2-130m, or none.
    #[arg(long, default_value = "130m,2.8b")]
    models: String,
    /// Prefill batch and prompt length, BATCHxLEN.
    #[arg(long, default_value = "16x2048")]
    prefill: String,
    /// Timed greedy decode steps per decode row.
    #[arg(long, default_value_t = 128)]
    decode_steps: usize,
    /// Decode batch sizes, comma separated: up to 8 sequences take the fused step (four
    /// dispatches per layer), more the unfused one with tiled GEMMs.
    #[arg(long, default_value = "1,4,16")]
    decode_batches: String,
    /// Decode with the unfused step (ten ops per layer) for comparison.
    #[arg(long)]
    unfused: bool,
    /// Weight storage of the models: f32, f16, bf16 or q8 (Q8_0 projections and head).
    #[arg(long, default_value = "f32")]
    weights: String,
    /// With q8: the activations as f32 or int8 (integer dot products); default: the
    /// backend's own (int8 on the CPU, f32 on the GPUs).
    #[arg(long)]
    q8_activations: Option<String>,
    /// wgpu: channels per scan workgroup to aim for (the adapter's limits still cap it).
    #[arg(long)]
    scan_channels: Option<u32>,
    /// wgpu, cuda: Mamba-2's scan in the sequential form at every length (not chunked).
    #[arg(long)]
    ssd_sequential: bool,
    /// wgpu: record every decode step afresh instead of replaying its dispatches.
    #[arg(long)]
    no_replay: bool,
    /// Print one JSON object per measured row on stdout (keys: backend, model, what,
    /// batch, dtype, tokens_per_s, dispatches_per_token, host_us_per_step, gbs,
    /// floor_ratio, fused; null where not applicable) instead of the tables. Decode rows:
    /// tokens_per_s counts every sequence's tokens, dispatches_per_token is per step
    /// (one token of each sequence), gbs the step's memory floor (weights once, the ssm
    /// states read and written) over its time.
    #[arg(long)]
    json: bool,
}

/// One measured row, for `--json`: stable keys, null where a value does not apply.
struct Row<'a> {
    backend: &'a str,
    model: Option<&'a str>,
    what: &'a str,
    batch: usize,
    dtype: &'a str,
    tokens_per_s: Option<f64>,
    dispatches_per_token: Option<f64>,
    host_us_per_step: Option<f64>,
    gbs: Option<f64>,
    floor_ratio: Option<f64>,
    /// Decode rows: whether the step was the fused one.
    fused: Option<bool>,
}

impl Row<'_> {
    fn print(&self) {
        let v = serde_json::json!({
            "backend": self.backend,
            "model": self.model,
            "what": self.what,
            "batch": self.batch,
            "dtype": self.dtype,
            "tokens_per_s": self.tokens_per_s,
            "dispatches_per_token": self.dispatches_per_token,
            "host_us_per_step": self.host_us_per_step,
            "gbs": self.gbs,
            "floor_ratio": self.floor_ratio,
            "fused": self.fused,
        });
        println!("{v}");
    }
}

/// Dispatches (wgpu) or kernel launches (CUDA) counted so far by the backend.
type Counter<'a> = &'a dyn Fn() -> Option<u64>;

/// Prefill and decode tokens/s of random-weight models on `be`.
fn model_table<B: Backend>(be: &B, args: &Args, count: Counter<'_>) -> Result<()> {
    use mamba_gpu::model::{LoadOptions, MambaModel, SyntheticModel, WeightDType};
    let (batch, len) = args
        .prefill
        .split_once('x')
        .and_then(|(b, l)| Some((b.parse::<usize>().ok()?, l.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("bad --prefill `{}` (want BATCHxLEN)", args.prefill));
    let (store, wd) = match args.weights.as_str() {
        "bf16" => (DType::BF16, WeightDType::BF16),
        "f16" => (DType::F16, WeightDType::F16),
        // The checkpoint in f32, the projections and head quantized at load.
        "q8" => (DType::F32, WeightDType::Q8_0),
        _ => (DType::F32, WeightDType::F32),
    };
    let decode_batches: Vec<usize> = args
        .decode_batches
        .split(',')
        .map(|b| {
            b.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad --decode-batches `{b}`"))
        })
        .collect();
    let peak = args
        .peak_gbs
        .or_else(|| std::env::var("MAMBA_GPU_PEAK_GBS").ok()?.parse().ok());
    if !args.json {
        println!(
            "\n| model | params | weights | what | batch | tok/s | host µs/step | \
             dispatches/token | GB/s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    for name in args
        .models
        .split(',')
        .map(str::trim)
        .filter(|m| *m != "none" && !m.is_empty())
    {
        let shape = match name {
            "130m" => SyntheticModel::MAMBA_130M,
            "2.8b" => SyntheticModel::MAMBA_2_8B,
            "mamba2-130m" => SyntheticModel::MAMBA2_130M,
            other => panic!("unknown model shape `{other}` (130m | 2.8b | mamba2-130m)"),
        };
        let bytes = shape.checkpoint(7, store)?;
        let opts = LoadOptions {
            weight_dtype: wd,
            progress: false,
            ..LoadOptions::default()
        };
        let mut model =
            MambaModel::from_bytes(be, shape.config_json().as_bytes(), &[&bytes], &opts)?;
        model.set_fused_decode(!args.unfused);
        drop(bytes);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let prompts: Vec<Vec<u32>> = (0..batch.max(*decode_batches.iter().max().unwrap_or(&1)))
            .map(|_| {
                (0..len)
                    .map(|_| rng.random_range(0..shape.vocab as u32))
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        // Warm-up (pipelines, kernels, allocator), then the timed prefill.
        let mut st = model.new_state(batch)?;
        model.prefill(&mut st, &[&refs[0][..len.min(64)]; 1].repeat(batch))?;
        model.greedy_ids(&mut st)?;
        let mut st = model.new_state(batch)?;
        let c0 = count();
        let t = Instant::now();
        model.prefill(&mut st, &refs[..batch])?;
        model.greedy_ids(&mut st)?;
        let prefill = (batch * len) as f64 / t.elapsed().as_secs_f64();
        let prefill_dispatches = c0
            .zip(count())
            .map(|(a, b)| (b - a) as f64 / (batch * len) as f64);
        let row = |what, batch, tps, disp, host, gbs: Option<f64>, fused| Row {
            backend: be.name(),
            model: Some(name),
            what,
            batch,
            dtype: &args.weights,
            tokens_per_s: Some(tps),
            dispatches_per_token: disp,
            host_us_per_step: host,
            gbs,
            // As for the scan rows: time over the memory floor's time (1 is the floor).
            floor_ratio: gbs
                .zip(peak)
                .filter(|&(g, p)| g > 0.0 && p > 0.0)
                .map(|(g, p)| p / g),
            fused,
        };
        let mut rows = vec![row(
            "prefill",
            batch,
            prefill,
            prefill_dispatches,
            None,
            None,
            None,
        )];
        // A decode step reads every weight once (whatever the batch) and each sequence's
        // ssm state twice (read and write): the memory floor of a step.
        // With q8 the weights count 34 bytes per 32 (≈: the small x_proj, dt_proj and
        // conv weights stay f32).
        let weight_bytes = match wd {
            WeightDType::Q8_0 => shape.params() as f64 * 34.0 / 32.0,
            _ => (shape.params() * store.size()) as f64,
        };
        let step_bytes = |b: usize| {
            weight_bytes + (2 * b * shape.layers * 2 * shape.hidden * shape.state * 4) as f64
        };
        for &b in &decode_batches {
            let (tps, host_us, disp) = decode_rate(&model, &refs[..b], len, args, count)?;
            let gbs = step_bytes(b) * tps / b as f64 / 1e9;
            let fused = model.uses_fused_decode(b);
            rows.push(row(
                "decode",
                b,
                tps,
                disp,
                Some(host_us),
                Some(gbs),
                Some(fused),
            ));
        }
        for r in &rows {
            if args.json {
                r.print();
            } else {
                let f = |v: Option<f64>, p: usize| v.map_or("-".into(), |v| format!("{v:.p$}"));
                let what = match r.fused {
                    Some(true) => "decode (fused)",
                    Some(false) => "decode",
                    None => r.what,
                };
                println!(
                    "| {name} | {:.0}M | {} | {what} | {} | {} | {} | {} | {} |",
                    shape.params() as f64 / 1e6,
                    args.weights,
                    r.batch,
                    f(r.tokens_per_s, 1),
                    f(r.host_us_per_step, 0),
                    f(r.dispatches_per_token, 0),
                    f(r.gbs, 1),
                );
            }
        }
    }
    Ok(())
}

/// Greedy decode of `prompts.len()` sequences: argmax on the device, one small download
/// per step. Returns tokens/s (all sequences), host µs per step and dispatches per
/// step (the step plus the greedy read-back's own dispatches, the argmax) where counted.
fn decode_rate<B: Backend>(
    model: &mamba_gpu::model::MambaModel<B>,
    prompts: &[&[u32]],
    len: usize,
    args: &Args,
    count: Counter<'_>,
) -> Result<(f64, f64, Option<f64>)> {
    let b = prompts.len();
    let short: Vec<&[u32]> = prompts.iter().map(|p| &p[..len.min(16)]).collect();
    let mut st = model.new_state(b)?;
    model.prefill(&mut st, &short)?;
    model.greedy_ids(&mut st)?;
    // Two untimed steps: on CUDA the first runs directly, the second captures the
    // step's graph (MAMBA_CUDA_GRAPHS=0 times direct launches instead).
    for _ in 0..2 {
        model.step_device_ids(&mut st)?;
        model.greedy_ids(&mut st)?;
    }
    // Host µs/step: the time `step_device_ids` takes to record and submit the step (it
    // does not wait for the device), the part no GPU can speed up.
    let mut host = 0.0;
    let steps = args.decode_steps.max(1);
    let c0 = count();
    let t = Instant::now();
    for _ in 0..steps {
        let h = Instant::now();
        model.step_device_ids(&mut st)?;
        host += h.elapsed().as_secs_f64();
        model.greedy_ids(&mut st)?;
    }
    let tps = (steps * b) as f64 / t.elapsed().as_secs_f64();
    let disp = c0.zip(count()).map(|(a, c)| (c - a) as f64 / steps as f64);
    Ok((tps, host / steps as f64 * 1e6, disp))
}

fn parse_shape(s: &str) -> Option<[usize; 4]> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == 4).then(|| [v[0], v[1], v[2], v[3]])
}

fn floor_bytes([batch, dim, len, n]: [usize; 4]) -> f64 {
    4.0 * (batch * len * (4 * dim + 2 * n)) as f64 + 4.0 * (dim * n + 2 * dim) as f64
}

/// Times the scan on `be` for one shape: seconds per call (median of `iters`).
fn time_scan<B: Backend>(be: &B, shape: [usize; 4], iters: usize, layout: Layout) -> Result<f64> {
    let [batch, dim, len, n] = shape;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut vec = |k: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..k).map(|_| rng.random_range(lo..hi)).collect()
    };
    let (seq, bc) = match layout {
        Layout::ChannelMajor => (vec![batch, dim, len], vec![batch, n, len]),
        Layout::TokenMajor => (vec![batch, len, dim], vec![batch, len, n]),
    };
    let nseq = batch * dim * len;
    let up = |v: &[f32], s: &[usize]| be.upload(HostSlice::F32(v), s);
    let u = up(&vec(nseq, -1.0, 1.0), &seq)?;
    let delta = up(&vec(nseq, 0.0, 0.5), &seq)?;
    let z = up(&vec(nseq, -1.0, 1.0), &seq)?;
    let a = up(&vec(dim * n, -0.5, 0.0), &[dim, n])?;
    let b = up(&vec(batch * n * len, -1.0, 1.0), &bc)?;
    let c = up(&vec(batch * n * len, -1.0, 1.0), &bc)?;
    let d = up(&vec(dim, -1.0, 1.0), &[dim])?;
    let bias = up(&vec(dim, 0.0, 0.5), &[dim])?;
    let mut out = be.zeros(DType::F32, &seq)?;
    let mut state = be.zeros(DType::F32, &[batch, dim, n])?;
    let inputs = ScanInputs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &c,
        d: Some(&d),
        z: Some(&z),
        delta_bias: Some(&bias),
        delta_softplus: true,
        layout,
    };
    let mut times = Vec::with_capacity(iters);
    for i in 0..=iters {
        let t = Instant::now();
        ops::selective_scan(be, &inputs, StateIo::Final(&mut state), &mut out)?;
        be.download(&state)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Prints one row per shape: time, achieved GB/s (floor bytes / time) and the ratio of
/// the time to the memory floor (floor bytes / peak bandwidth) when the peak is known.
fn table<B: Backend>(
    be: &B,
    shapes: &[[usize; 4]],
    args: &Args,
    layout: Layout,
    peak_gbs: Option<f64>,
) -> Result<()> {
    let iters = args.iters;
    if shapes.is_empty() {
        return Ok(());
    }
    if !args.json {
        println!(
            "{:<24} {:>11} {:>12} {:>10} {:>10}",
            format!("{} batch×dim×L×N", be.name()),
            "time (ms)",
            "floor (MB)",
            "GB/s",
            "× floor"
        );
    }
    for &shape in shapes {
        let secs = time_scan(be, shape, iters, layout)?;
        let bytes = floor_bytes(shape);
        let gbs = bytes / secs / 1e9;
        let ratio = match peak_gbs {
            Some(peak) if peak > 0.0 => format!("{:.2}", secs / (bytes / (peak * 1e9))),
            _ => "-".into(),
        };
        let [b, d, l, n] = shape;
        if args.json {
            Row {
                backend: be.name(),
                model: None,
                what: "scan",
                batch: b,
                dtype: "f32",
                tokens_per_s: Some((b * l) as f64 / secs),
                dispatches_per_token: None,
                host_us_per_step: None,
                gbs: Some(gbs),
                floor_ratio: peak_gbs
                    .filter(|&p| p > 0.0)
                    .map(|peak| secs / (bytes / (peak * 1e9))),
                fused: None,
            }
            .print();
            continue;
        }
        println!(
            "{:<24} {:>11.3} {:>12.1} {:>10.2} {:>10}",
            format!("{b}×{d}×{l}×{n}"),
            secs * 1e3,
            bytes / 1e6,
            gbs,
            ratio
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let shapes: Vec<[usize; 4]> = args
        .shapes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .map(|s| parse_shape(s).unwrap_or_else(|| panic!("bad shape `{s}` (want BxDxLxN)")))
        .collect();
    let ssd_shapes: Vec<[usize; 5]> = args
        .ssd_shapes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .map(|s| ssd::parse(s).unwrap_or_else(|| panic!("bad ssd shape `{s}` (want BxHxPxLxN)")))
        .collect();
    let layout = if args.token_major {
        Layout::TokenMajor
    } else {
        Layout::ChannelMajor
    };
    let peak = args.peak_gbs.or_else(|| {
        std::env::var("MAMBA_GPU_PEAK_GBS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    eprintln!(
        "floor bytes = 4·batch·L·(4·dim + 2·N) + 4·(dim·N + 2·dim); × floor = time / \
         (floor bytes / peak), peak = {}",
        peak.map_or("unknown (--peak-gbs)".to_string(), |p| format!("{p} GB/s"))
    );
    let q8_acts = match args.q8_activations.as_deref() {
        None => None,
        Some("f32") => Some(mamba_gpu::Q8Activations::F32),
        Some("int8") => Some(mamba_gpu::Q8Activations::Int8),
        Some(other) => {
            eprintln!("unknown --q8-activations `{other}` (f32 | int8)");
            std::process::exit(2);
        }
    };
    match args.backend.as_str() {
        // The CPU backend as models run it (f32 scan arithmetic), not the f64 reference.
        "cpu" => {
            let mut be = CpuBackend::with_precision(mamba_gpu::Precision::Fast);
            if let Some(a) = q8_acts {
                be = be.with_q8_activations(a);
            }
            table(&be, &shapes, &args, layout, peak)?;
            ssd::table(&be, &ssd_shapes, args.iters, peak, args.json)?;
            model_table(&be, &args, &|| None)
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let be = mamba_gpu::wgpu::WgpuBackend::with_options(mamba_gpu::wgpu::WgpuOptions {
                scan_channels: args.scan_channels,
                no_replay: args.no_replay,
                ssd_sequential: args.ssd_sequential,
                q8_activations: q8_acts.unwrap_or_default(),
                ..Default::default()
            })?;
            let (channels, bytes) = be.scan_workgroup(16)?;
            eprintln!(
                "adapter: {} (scan at N = 16: {channels} channels × 64 invocations, {bytes} B \
                 workgroup memory, {} path)",
                be.adapter_info().name,
                if be.uses_subgroup_scan() {
                    "subgroup"
                } else {
                    "shared-memory"
                }
            );
            table(&be, &shapes, &args, layout, peak)?;
            ssd::table(&be, &ssd_shapes, args.iters, peak, args.json)?;
            model_table(&be, &args, &|| Some(be.dispatch_count()))
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            let be = mamba_gpu::cuda::CudaBackend::new(0)?;
            be.precompile()?;
            be.set_ssd_sequential(args.ssd_sequential);
            be.set_q8_activations(q8_acts.unwrap_or_default());
            eprintln!("device: {}", be.device_name());
            table(&be, &shapes, &args, layout, peak)?;
            ssd::table(&be, &ssd_shapes, args.iters, peak, args.json)?;
            model_table(&be, &args, &|| Some(be.launch_count()))
        }
        other => {
            eprintln!("unknown backend `{other}` (cpu | wgpu | cuda, as built)");
            std::process::exit(2);
        }
    }
}
