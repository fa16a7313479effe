//! `--mamba2`: mamba-gpu's Mamba-2 against candle-transformers' `mamba2` on the CPU,
//! with the same seeded random weights: `SyntheticModel::MAMBA2_130M` (d_model 768, 24
//! layers, head_dim 64, 1 group, d_state 128, vocab 50288, tied; Hugging Face names,
//! which candle's `mamba2` reads under `backbone`).
//!
//! Checks that the last-position logits of one prompt agree (relative L2 against
//! mamba-gpu's exact f64 backend), then times batch-1 greedy decode and a prompt
//! prefill (candle: its chunked `forward_prefill`, chunk 256, as the HF config says).

use std::time::Instant;

use mamba_gpu::model::{LoadOptions, MambaModel, SyntheticModel, WeightDType};
use mamba_gpu::{Backend, CpuBackend, DType, Precision};

use super::{Opts, argmax, load_avg, rel_l2, stats};

const VOCAB: usize = 50288;
const CHUNK: usize = 256;

fn prompt(len: usize, salt: u64) -> Vec<u32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x2bee ^ salt);
    (0..len)
        .map(|_| rng.random_range(0..VOCAB as u32))
        .collect()
}

struct Rates {
    name: String,
    decode: (f64, f64),
    prefill: (f64, f64),
    logits: Vec<f32>,
    ids: Vec<u32>,
}

fn ours(be: CpuBackend, cfg: &str, bytes: &[u8], o: &Opts, name: &str) -> Rates {
    let opts = LoadOptions {
        weight_dtype: WeightDType::F32,
        progress: false,
        ..LoadOptions::default()
    };
    let m = MambaModel::from_bytes(be, cfg.as_bytes(), &[bytes], &opts).expect("load");
    let logits = m.logits_for(&prompt(o.check, 1)).expect("logits");
    let dp = prompt(o.decode_prompt, 2);
    let (mut dec, mut ids) = (Vec::new(), Vec::new());
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
        dec.push(o.steps as f64 / t.elapsed().as_secs_f64());
    }
    let pp = prompt(o.prefill, 3);
    let mut pre = Vec::new();
    for _ in 0..o.runs {
        let mut st = m.new_state(1).unwrap();
        let t = Instant::now();
        m.prefill(&mut st, &[&pp]).unwrap();
        let _ = m.download_logits(&st).unwrap();
        pre.push(o.prefill as f64 / t.elapsed().as_secs_f64());
    }
    Rates {
        name: name.into(),
        decode: stats(dec),
        prefill: stats(pre),
        logits,
        ids,
    }
}

fn candle(bytes: &[u8], o: &Opts) -> candle_core::Result<Rates> {
    use candle_core::{Device, IndexOp, Tensor};
    use candle_transformers::models::mamba2::{Config, Model, State};
    let dev = Device::Cpu;
    let ts = candle_core::safetensors::load_buffer(bytes, &dev)?;
    let vb = candle_nn::VarBuilder::from_tensors(ts, candle_core::DType::F32, &dev);
    let cfg = Config {
        d_model: 768,
        n_layer: 24,
        vocab_size: VOCAB,
        d_state: 128,
        expand: 2,
        headdim: 64,
        ngroups: 1,
        pad_vocab_size_multiple: 16,
    };
    let model = Model::new(&cfg, vb.pp("backbone"))?;
    let f32 = candle_core::DType::F32;
    // Last-position logits after a prompt, through the chunked prefill.
    let prefill = |ids: &[u32], st: &mut State| -> candle_core::Result<Vec<f32>> {
        let x = Tensor::new(ids, &dev)?.unsqueeze(0)?;
        let l = model.forward_prefill(&x, st, CHUNK)?;
        let last = l.dim(1)? - 1;
        l.i((0, last))?.to_vec1::<f32>()
    };
    let mut st = State::new(1, &cfg, f32, &dev)?;
    let logits = prefill(&prompt(o.check, 1), &mut st)?;
    let dp = prompt(o.decode_prompt, 2);
    let (mut dec, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        let mut st = State::new(1, &cfg, f32, &dev)?;
        let mut last = prefill(&dp, &mut st)?;
        ids.clear();
        let t = Instant::now();
        for _ in 0..o.steps {
            let id = argmax(&last);
            ids.push(id);
            let x = Tensor::new(&[id], &dev)?;
            last = model.forward(&x, &mut st)?.squeeze(0)?.to_vec1::<f32>()?;
        }
        dec.push(o.steps as f64 / t.elapsed().as_secs_f64());
    }
    let pp = prompt(o.prefill, 3);
    let mut pre = Vec::new();
    for _ in 0..o.runs {
        let mut st = State::new(1, &cfg, f32, &dev)?;
        let t = Instant::now();
        prefill(&pp, &mut st)?;
        pre.push(o.prefill as f64 / t.elapsed().as_secs_f64());
    }
    Ok(Rates {
        name: "candle-transformers 0.9.2 mamba2, f32".into(),
        decode: stats(dec),
        prefill: stats(pre),
        logits,
        ids,
    })
}

/// The Mamba-2 table (see the module docs).
pub fn run(o: &Opts) {
    let shape = SyntheticModel::MAMBA2_130M;
    let cfg = shape.config_json();
    let bytes = shape
        .checkpoint(0x6d61_6d62_32, DType::F32)
        .expect("checkpoint");
    let load_start = load_avg();
    let reference = {
        let opts = LoadOptions {
            weight_dtype: WeightDType::F32,
            progress: false,
            ..LoadOptions::default()
        };
        let m = MambaModel::from_bytes(CpuBackend::new(), cfg.as_bytes(), &[&bytes], &opts)
            .expect("load");
        m.logits_for(&prompt(o.check, 1)).expect("reference")
    };
    let mut rows = Vec::new();
    let fast = CpuBackend::with_precision(Precision::Fast);
    let label = format!("mamba-gpu (ours), {}, f32 weights", fast.name());
    rows.push(ours(fast, &cfg, &bytes, o, &label));
    match candle(&bytes, o) {
        Ok(r) => rows.push(r),
        Err(e) => eprintln!("candle mamba2 failed: {e}"),
    }
    let load_end = load_avg();
    println!("\n## Mamba-2 130m shape, CPU, batch 1\n");
    println!(
        "Seeded random weights (`SyntheticModel::MAMBA2_130M`). Decode: {} greedy steps \
         after a {}-token prompt; prefill: last-position logits of a {}-token prompt. \
         Median and best of {} runs. Load average {load_start} → {load_end}.\n",
        o.steps, o.decode_prompt, o.prefill, o.runs
    );
    println!(
        "| implementation | decode tok/s median | best | prefill tok/s median | best | \
         logits rel L2 vs f64 |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2e} |",
            r.name,
            r.decode.0,
            r.decode.1,
            r.prefill.0,
            r.prefill.1,
            rel_l2(&r.logits, &reference)
        );
    }
    if let [a, b] = &rows[..] {
        let same = a.ids.iter().zip(&b.ids).take_while(|(x, y)| x == y).count();
        println!(
            "\nGreedy decode ids agree for the first {same} of {} steps; ours / candle: \
             decode {:.2}×, prefill {:.2}× (medians).",
            a.ids.len(),
            a.decode.0 / b.decode.0,
            a.prefill.0 / b.prefill.0
        );
    }
}
