//! The whole-model check against Hugging Face transformers that any backend is run
//! through: [`check_model_fixtures`] loads the checkpoints of
//! `tests/fixtures/models/<name>/` and compares them with the logits and greedy tokens
//! transformers produced for them. The synthetic-model checks are in
//! [`super::model_synth`].

use std::path::{Path, PathBuf};

use mamba_gpu::Backend;
use mamba_gpu::model::{BatchGenerator, GenerateOptions, MambaModel, SamplingParams};
use safetensors::{Dtype, SafeTensors};

use super::model_io::quiet;
use super::rel_l2;

/// Tolerances of the fixture checks.
pub const LOGITS_REL_L2: f64 = 1e-4;
pub const NEAR_TIE: f32 = 1e-4;

/// The model fixture directories (`MAMBA_MODEL_FIXTURES` overrides the location).
pub fn model_fixture_dirs() -> Vec<PathBuf> {
    let root = std::env::var_os("MAMBA_MODEL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("expected.safetensors").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn ints(st: &SafeTensors<'_>, name: &str) -> Option<Vec<u32>> {
    let t = st.tensor(name).ok()?;
    let v: Vec<u32> = match t.dtype() {
        Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect(),
        Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    Some(v)
}

fn floats(st: &SafeTensors<'_>, name: &str) -> Option<Vec<f32>> {
    let t = st.tensor(name).ok()?;
    assert_eq!(t.dtype(), Dtype::F32, "{name}: expected F32");
    Some(bytemuck::pod_collect_to_vec(t.data()))
}

/// Result of one fixture model.
#[derive(Debug, Clone)]
pub struct FixtureReport {
    pub name: String,
    pub prompts: usize,
    pub worst_rel_l2: f64,
    pub longest_prompt: usize,
    pub greedy_tokens: usize,
    pub near_ties: usize,
}

/// One reference case: (label, prompts, last-position logits, greedy tokens).
type Case = (String, Vec<Vec<u32>>, Vec<f32>, Option<Vec<u32>>);

/// Compares our greedy tokens with a reference; `Err` describes a divergence that is
/// not a near-tie of our own logits (within 1e-4 of the largest |logit|).
pub fn compare_greedy<B: Backend>(
    model: &MambaModel<B>,
    what: &str,
    prompt: &[u32],
    ours: &[u32],
    reference: &[u32],
    tally: &mut FixtureReport,
) -> Result<(), String> {
    let Some(j) = (0..reference.len()).find(|&j| ours.get(j) != Some(&reference[j])) else {
        tally.greedy_tokens += reference.len();
        return Ok(());
    };
    let mut ctx = prompt.to_vec();
    ctx.extend_from_slice(&reference[..j]);
    let l = model.logits_for(&ctx).map_err(|e| e.to_string())?;
    let (a, b) = (ours[j] as usize, reference[j] as usize);
    let scale = l.iter().fold(1f32, |m, v| m.max(v.abs()));
    tally.greedy_tokens += j;
    if (l[a] - l[b]).abs() <= NEAR_TIE * scale {
        tally.near_ties += 1;
        return Ok(());
    }
    let mut hint = String::new();
    if prompt.len() + 1 < model.config().conv_kernel {
        hint += " [transformers' generate(use_cache=True) mis-places the conv state for \
                 prompts shorter than conv_kernel - 1 tokens: make such references with \
                 use_cache=False]";
    }
    if let Some(pad) = model.config().pad_token_id
        && prompt.contains(&pad)
    {
        hint += &format!(
            " [the prompt contains the pad id {pad}: transformers' generate without an \
                 explicit attention_mask (and with eos_token_id=None) infers one that zeroes \
                 those positions; make the reference with attention_mask=torch.ones_like(ids)]"
        );
    }
    Err(format!(
        "{what}: greedy token {j} is {a}, reference {b} (our logits {} vs {}); \
         ours {ours:?}, reference {reference:?}{hint}",
        l[a], l[b]
    ))
}

/// Loads every fixture model onto `be` and checks last-position logits (relative L2
/// ≤ 1e-4) and greedy tokens (identical, a reference near-tie within 1e-4 excepted),
/// for every prompt and the batched case where present. Every mismatch of every model
/// is collected before the one panic that lists them. Returns one report per model
/// (empty when there are no fixtures).
pub fn check_model_fixtures<B: Backend>(be: &B) -> Vec<FixtureReport> {
    check_model_fixtures_where(be, |_| true)
}

/// [`check_model_fixtures`] on the fixtures whose directory name `keep` accepts (the
/// CUDA execution model, slow per launch, skips the `*_layout` copies: the same weights
/// under the original names, a loader matter checked on the CPU).
pub fn check_model_fixtures_where<B: Backend>(
    be: &B,
    keep: impl Fn(&str) -> bool,
) -> Vec<FixtureReport> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for dir in model_fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if !keep(&name) {
            continue;
        }
        let model = match MambaModel::load(be, &dir, &quiet()) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: load: {e}"));
                continue;
            }
        };
        let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let exp = SafeTensors::deserialize(&bytes).unwrap();
        let mut rep = FixtureReport {
            name: name.clone(),
            prompts: 0,
            worst_rel_l2: 0.0,
            longest_prompt: 0,
            greedy_tokens: 0,
            near_ties: 0,
        };
        let mut cases: Vec<Case> = Vec::new();
        for i in 0.. {
            let Some(ids) = ints(&exp, &format!("prompt_{i}_ids")) else {
                break;
            };
            let want = floats(&exp, &format!("prompt_{i}_logits")).unwrap();
            let greedy = ints(&exp, &format!("prompt_{i}_greedy"));
            cases.push((format!("{name} prompt {i}"), vec![ids], want, greedy));
        }
        if cases.is_empty() {
            failures.push(format!("{name}: expected.safetensors has no prompt_0_ids"));
        }
        if let Some(ids) = ints(&exp, "batch_ids") {
            let rows = exp.tensor("batch_ids").unwrap().shape()[0];
            let len = ids.len() / rows;
            let prompts = ids.chunks(len).map(<[u32]>::to_vec).collect();
            let want = floats(&exp, "batch_logits").unwrap();
            cases.push((
                format!("{name} batch"),
                prompts,
                want,
                ints(&exp, "batch_greedy"),
            ));
        }
        for (what, prompts, want, greedy) in cases {
            let batch = prompts.len();
            let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
            let got = model.new_state(batch).and_then(|mut st| {
                model.prefill(&mut st, &refs)?;
                model.download_logits(&st)
            });
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    failures.push(format!("{what}: {e}"));
                    continue;
                }
            };
            let e = rel_l2(&got, &want);
            if e.is_nan() || e > LOGITS_REL_L2 {
                failures.push(format!(
                    "{what} ({} tokens): logits rel L2 {e:.3e} > {LOGITS_REL_L2:.0e}",
                    prompts[0].len()
                ));
            }
            rep.worst_rel_l2 = rep.worst_rel_l2.max(e);
            rep.longest_prompt = rep.longest_prompt.max(prompts[0].len());
            rep.prompts += batch;
            let Some(greedy) = greedy.filter(|g| !g.is_empty()) else {
                continue;
            };
            let n = greedy.len() / batch;
            let opts = GenerateOptions {
                sampling: SamplingParams::greedy(),
                max_new_tokens: n,
                stop_ids: vec![],
                ignore_eos: true,
            };
            let ours = match BatchGenerator::new(&model, &prompts, &opts).and_then(|g| g.run()) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{what}: generate: {e}"));
                    continue;
                }
            };
            for (r, (o, p)) in ours.iter().zip(&prompts).enumerate() {
                let label = if batch > 1 {
                    format!("{what} row {r}")
                } else {
                    what.clone()
                };
                let reference = &greedy[r * n..(r + 1) * n];
                if let Err(msg) = compare_greedy(&model, &label, p, o, reference, &mut rep) {
                    failures.push(msg);
                }
            }
        }
        eprintln!(
            "model fixture {}: {} prompts (longest {} tokens), worst logits rel L2 {:.3e}, \
             {} greedy tokens identical, {} near-ties; decode step at batch 1 {}",
            rep.name,
            rep.prompts,
            rep.longest_prompt,
            rep.worst_rel_l2,
            rep.greedy_tokens,
            rep.near_ties,
            if model.uses_fused_decode(1) {
                "fused"
            } else {
                "unfused"
            }
        );
        reports.push(rep);
    }
    if reports.is_empty() && failures.is_empty() {
        eprintln!("no model fixtures under tests/fixtures/models: HF comparison not run");
    }
    assert!(
        failures.is_empty(),
        "{} model fixture mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
    reports
}
