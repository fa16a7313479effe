//! Synthetic checkpoints and the whole-model check any backend is run through with
//! them: [`check_model_consistency`] holds a seeded synthetic checkpoint to a naive f64
//! implementation of `MambaForCausalLM` written here from the paper/HF semantics
//! ([`reference_logits`]), and checks the properties of the decode path (prefill + steps
//! = longer prefill, chunked prefill on a restored state = whole prefill, batched =
//! alone). The check against transformers' own outputs is in [`super::model_fixtures`].

use mamba_gpu::Backend;
use mamba_gpu::model::{BatchGenerator, GenerateOptions, MambaModel, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, tensor::TensorView};

use super::model_io::quiet;
use super::rel_l2;

/// Sizes and options of a synthetic model.
#[derive(Debug, Clone)]
pub struct Synth {
    pub hidden: usize,
    pub layers: usize,
    pub state: usize,
    pub conv: usize,
    pub expand: usize,
    pub dt_rank: usize,
    pub vocab: usize,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    pub tied: bool,
    /// state-spaces names (`backbone.embedding.weight`) and config keys.
    pub original: bool,
    pub eos: u32,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            hidden: 16,
            layers: 2,
            state: 4,
            conv: 4,
            expand: 2,
            dt_rank: 2,
            vocab: 40,
            use_bias: false,
            use_conv_bias: true,
            tied: true,
            original: false,
            eos: 0,
        }
    }
}

/// A named f32 tensor.
pub type Tensor = (String, Vec<usize>, Vec<f32>);

impl Synth {
    pub fn e(&self) -> usize {
        self.expand * self.hidden
    }

    pub fn config_json(&self) -> String {
        if self.original {
            format!(
                r#"{{"d_model": {}, "n_layer": {}, "vocab_size": {}, "ssm_cfg": {{"d_state": {}, "d_conv": {}, "expand": {}, "dt_rank": {}, "bias": {}, "conv_bias": {}}}, "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 1, "tie_embeddings": {}}}"#,
                self.hidden,
                self.layers,
                self.vocab,
                self.state,
                self.conv,
                self.expand,
                self.dt_rank,
                self.use_bias,
                self.use_conv_bias,
                self.tied
            )
        } else {
            format!(
                r#"{{"model_type": "mamba", "architectures": ["MambaForCausalLM"], "hidden_size": {}, "num_hidden_layers": {}, "intermediate_size": {}, "state_size": {}, "conv_kernel": {}, "expand": {}, "time_step_rank": {}, "vocab_size": {}, "use_bias": {}, "use_conv_bias": {}, "layer_norm_epsilon": 1e-5, "residual_in_fp32": true, "tie_word_embeddings": {}, "eos_token_id": {}, "bos_token_id": 0, "pad_token_id": 0, "hidden_act": "silu"}}"#,
                self.hidden,
                self.layers,
                self.e(),
                self.state,
                self.conv,
                self.expand,
                self.dt_rank,
                self.vocab,
                self.use_bias,
                self.use_conv_bias,
                self.tied,
                self.eos
            )
        }
    }

    /// Seeded weights with realistic magnitudes (Mamba's initialisation).
    pub fn tensors(&self, seed: u64) -> Vec<Tensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, e, n, k, r, v) = (
            self.hidden,
            self.e(),
            self.state,
            self.conv,
            self.dt_rank,
            self.vocab,
        );
        let mut uni = |len: usize, a: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-a..a)).collect()
        };
        let emb_name = if self.original {
            "backbone.embedding.weight"
        } else {
            "backbone.embeddings.weight"
        };
        let mut t: Vec<Tensor> = vec![(emb_name.into(), vec![v, d], uni(v * d, 1.0))];
        for i in 0..self.layers {
            let p = |w: &str| format!("backbone.layers.{i}.{w}");
            let norm: Vec<f32> = uni(d, 0.2).iter().map(|x| 1.0 + x).collect();
            t.push((p("norm.weight"), vec![d], norm));
            let a_log: Vec<f32> = (0..e * n).map(|j| ((j % n) as f32 + 1.0).ln()).collect();
            t.push((p("mixer.A_log"), vec![e, n], a_log));
            let dd: Vec<f32> = uni(e, 0.5).iter().map(|x| 1.0 + x).collect();
            t.push((p("mixer.D"), vec![e], dd));
            t.push((p("mixer.conv1d.weight"), vec![e, 1, k], uni(e * k, 0.5)));
            if self.use_conv_bias {
                t.push((p("mixer.conv1d.bias"), vec![e], uni(e, 0.3)));
            }
            let sd = 1.0 / (d as f32).sqrt();
            t.push((
                p("mixer.in_proj.weight"),
                vec![2 * e, d],
                uni(2 * e * d, sd),
            ));
            if self.use_bias {
                t.push((p("mixer.in_proj.bias"), vec![2 * e], uni(2 * e, 0.1)));
            }
            let se = 1.0 / (e as f32).sqrt();
            t.push((
                p("mixer.x_proj.weight"),
                vec![r + 2 * n, e],
                uni((r + 2 * n) * e, se),
            ));
            t.push((
                p("mixer.dt_proj.weight"),
                vec![e, r],
                uni(e * r, 1.0 / (r as f32).sqrt()),
            ));
            // softplus⁻¹ of Δ in [0.001, 0.1], as Mamba initialises it.
            let dt_bias: Vec<f32> = uni(e, 1.0)
                .iter()
                .map(|u| {
                    let dt = (0.001f64.ln()
                        + (u + 1.0) as f64 / 2.0 * (0.1f64.ln() - 0.001f64.ln()))
                    .exp();
                    (dt + (-(-dt).exp_m1()).ln()) as f32
                })
                .collect();
            t.push((p("mixer.dt_proj.bias"), vec![e], dt_bias));
            t.push((p("mixer.out_proj.weight"), vec![d, e], uni(d * e, se)));
            if self.use_bias {
                t.push((p("mixer.out_proj.bias"), vec![d], uni(d, 0.1)));
            }
        }
        let nf: Vec<f32> = uni(d, 0.2).iter().map(|x| 1.0 + x).collect();
        t.push(("backbone.norm_f.weight".into(), vec![d], nf));
        if !self.tied {
            t.push(("lm_head.weight".into(), vec![v, d], uni(v * d, 0.5)));
        }
        t
    }
}

/// Serialises tensors as safetensors in `dtype` (F32, F16 or BF16).
pub fn to_safetensors(tensors: &[Tensor], dtype: Dtype) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let bytes: Vec<u8> = match dtype {
                Dtype::F32 => bytemuck::cast_slice(v).to_vec(),
                Dtype::F16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                Dtype::BF16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                other => panic!("to_safetensors: {other:?}"),
            };
            (n.clone(), s.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn get<'a>(t: &'a [Tensor], name: &str) -> &'a [f32] {
    &t.iter()
        .find(|x| x.0 == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .2
}

/// Naive f64 `MambaForCausalLM`: the last-position logits of `ids`.
pub fn reference_logits(s: &Synth, t: &[Tensor], ids: &[u32]) -> Vec<f32> {
    let (d, e, n, k, r, v) = (s.hidden, s.e(), s.state, s.conv, s.dt_rank, s.vocab);
    let f = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<f64>>();
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let softplus = |x: f64| if x > 20.0 { x } else { x.exp().ln_1p() };
    let rms = |x: &[f64], w: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|a| a * a).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        x.iter().zip(w).map(|(a, g)| a * inv * g).collect()
    };
    let lin = |w: &[f64], rows: usize, x: &[f64], bias: Option<&[f64]>| -> Vec<f64> {
        (0..rows)
            .map(|o| {
                let row = &w[o * x.len()..(o + 1) * x.len()];
                row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + bias.map_or(0.0, |b| b[o])
            })
            .collect()
    };
    let emb_name = if s.original {
        "backbone.embedding.weight"
    } else {
        "backbone.embeddings.weight"
    };
    let emb = f(get(t, emb_name));
    let len = ids.len();
    let mut h: Vec<Vec<f64>> = ids
        .iter()
        .map(|&i| emb[i as usize * d..(i as usize + 1) * d].to_vec())
        .collect();
    for li in 0..s.layers {
        let p = |w: &str| format!("backbone.layers.{li}.{w}");
        let norm = f(get(t, &p("norm.weight")));
        let win = f(get(t, &p("mixer.in_proj.weight")));
        let bin = s.use_bias.then(|| f(get(t, &p("mixer.in_proj.bias"))));
        let cw = f(get(t, &p("mixer.conv1d.weight")));
        let cb = s.use_conv_bias.then(|| f(get(t, &p("mixer.conv1d.bias"))));
        let wx = f(get(t, &p("mixer.x_proj.weight")));
        let wdt = f(get(t, &p("mixer.dt_proj.weight")));
        let bdt = f(get(t, &p("mixer.dt_proj.bias")));
        let a: Vec<f64> = get(t, &p("mixer.A_log"))
            .iter()
            .map(|&x| -(x as f64).exp())
            .collect();
        let dd = f(get(t, &p("mixer.D")));
        let wo = f(get(t, &p("mixer.out_proj.weight")));
        let bo = s.use_bias.then(|| f(get(t, &p("mixer.out_proj.bias"))));
        let xz: Vec<Vec<f64>> = h
            .iter()
            .map(|x| lin(&win, 2 * e, &rms(x, &norm), bin.as_deref()))
            .collect();
        let mut hs = vec![0f64; e * n];
        for ti in 0..len {
            let mut xc = vec![0f64; e];
            for (c, out) in xc.iter_mut().enumerate() {
                let mut acc = cb.as_ref().map_or(0.0, |b| b[c]);
                for j in 0..k {
                    let tt = ti as isize - (k - 1 - j) as isize;
                    if tt >= 0 {
                        acc += cw[c * k + j] * xz[tt as usize][c];
                    }
                }
                *out = silu(acc);
            }
            let dbc = lin(&wx, r + 2 * n, &xc, None);
            let dt = lin(&wdt, e, &dbc[..r], Some(&bdt));
            let (bm, cm) = (&dbc[r..r + n], &dbc[r + n..]);
            let mut y = vec![0f64; e];
            for c in 0..e {
                let delta = softplus(dt[c]);
                let mut acc = 0.0;
                for j in 0..n {
                    let st = &mut hs[c * n + j];
                    *st = (delta * a[c * n + j]).exp() * *st + delta * bm[j] * xc[c];
                    acc += cm[j] * *st;
                }
                y[c] = (acc + dd[c] * xc[c]) * silu(xz[ti][e + c]);
            }
            let out = lin(&wo, d, &y, bo.as_deref());
            for (hv, o) in h[ti].iter_mut().zip(out) {
                *hv += o;
            }
        }
    }
    let nf = f(get(t, "backbone.norm_f.weight"));
    let last = rms(&h[len - 1], &nf);
    let head = if s.tied {
        emb
    } else {
        f(get(t, "lm_head.weight"))
    };
    lin(&head, v, &last, None)
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

/// Seeded prompt of `len` ids below `vocab`.
pub fn prompt(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

fn assert_rel(what: &str, got: &[f32], want: &[f32], max: f64) {
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite");
    let e = rel_l2(got, want);
    assert!(e <= max, "{what}: rel L2 {e:.3e} > {max:.1e}");
}

/// The synthetic-model checks, on `be`: against the naive reference (several configs,
/// both name spellings, tied/untied, biases, f16/bf16 files), and the decode-path
/// properties. `tol` is the relative L2 allowed against the f64 reference.
pub fn check_model_consistency<B: Backend>(be: &B, tol: f64) {
    let configs = [
        Synth::default(),
        Synth {
            use_bias: true,
            use_conv_bias: false,
            tied: false,
            ..Synth::default()
        },
        Synth {
            original: true,
            hidden: 24,
            dt_rank: 3,
            state: 8,
            conv: 3,
            layers: 3,
            vocab: 50,
            ..Synth::default()
        },
    ];
    for (ci, s) in configs.iter().enumerate() {
        let t = s.tensors(100 + ci as u64);
        let bytes = to_safetensors(&t, Dtype::F32);
        let model =
            MambaModel::from_bytes(be, s.config_json().as_bytes(), &[&bytes], &quiet()).unwrap();
        for (pi, len) in [1usize, 5, 37].into_iter().enumerate() {
            let ids = prompt(ci as u64 * 10 + pi as u64, len, s.vocab);
            let got = model.logits_for(&ids).unwrap();
            let want = reference_logits(s, &t, &ids);
            assert_rel(&format!("config {ci}, prompt len {len}"), &got, &want, tol);
        }
    }

    let s = Synth::default();
    let t = s.tensors(7);
    let bytes = to_safetensors(&t, Dtype::F32);
    let model =
        MambaModel::from_bytes(be, s.config_json().as_bytes(), &[&bytes], &quiet()).unwrap();
    let ids = prompt(99, 40, s.vocab);

    // Prefill L, then step token by token == prefill of the longer sequence.
    let mut st = model.new_state(1).unwrap();
    model.prefill(&mut st, &[&ids[..25]]).unwrap();
    for j in 25..40 {
        model.step(&mut st, &[ids[j]]).unwrap();
        let stepped = model.download_logits(&st).unwrap();
        let whole = model.logits_for(&ids[..=j]).unwrap();
        assert_rel(&format!("prefill 25 + steps to {j}"), &stepped, &whole, tol);
    }
    assert_eq!(st.tokens_seen(), &[40]);

    // Chunked prefill on a saved and restored state == whole prefill.
    let mut st = model.new_state(1).unwrap();
    model.prefill(&mut st, &[&ids[..13]]).unwrap();
    let saved = st.save(model.backend()).unwrap();
    let mut restored = model.new_state(1).unwrap();
    restored.restore(model.backend(), &saved).unwrap();
    model.prefill(&mut restored, &[&ids[13..30]]).unwrap();
    model.prefill(&mut restored, &[&ids[30..]]).unwrap();
    let chunked = model.download_logits(&restored).unwrap();
    let whole = model.logits_for(&ids).unwrap();
    assert_rel("chunked prefill on restored state", &chunked, &whole, tol);
    assert_eq!(restored.tokens_seen(), &[40]);

    // The internal prefill chunking gives the same.
    let mut chunky =
        MambaModel::from_bytes(be, s.config_json().as_bytes(), &[&bytes], &quiet()).unwrap();
    chunky.set_prefill_chunk(Some(7));
    assert_rel(
        "set_prefill_chunk(7)",
        &chunky.logits_for(&ids).unwrap(),
        &whole,
        tol,
    );

    // A batch of different-length prompts == each alone (logits and greedy tokens).
    let prompts: Vec<Vec<u32>> = [9usize, 1, 23, 9]
        .iter()
        .enumerate()
        .map(|(i, &l)| prompt(500 + i as u64, l, s.vocab))
        .collect();
    let opts = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_new_tokens: 12,
        stop_ids: vec![],
        ignore_eos: true,
    };
    let batched = BatchGenerator::new(&model, &prompts, &opts)
        .unwrap()
        .run()
        .unwrap();
    let mut bst = model.new_state(prompts.len()).unwrap();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
    model.prefill(&mut bst, &refs).unwrap();
    let blog = model.download_logits(&bst).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = BatchGenerator::new(&model, std::slice::from_ref(p), &opts)
            .unwrap()
            .run()
            .unwrap()
            .remove(0);
        assert_eq!(batched[i], alone, "batched sequence {i} differs from alone");
        let l = model.logits_for(p).unwrap();
        assert_rel(
            &format!("batched prefill logits {i}"),
            &blog[i * s.vocab..(i + 1) * s.vocab],
            &l,
            tol,
        );
    }
    // Same-length prompts take the batched path: check it too.
    let same: Vec<&[u32]> = vec![&ids[..10], &ids[10..20], &ids[20..30]];
    let mut sst = model.new_state(3).unwrap();
    model.prefill(&mut sst, &same).unwrap();
    let sl = model.download_logits(&sst).unwrap();
    for (i, p) in same.iter().enumerate() {
        assert_rel(
            &format!("same-length batch {i}"),
            &sl[i * s.vocab..(i + 1) * s.vocab],
            &model.logits_for(p).unwrap(),
            tol,
        );
    }
    // Decode in a batch == decode alone, step by step, with host-fed ids.
    let next: Vec<u32> = vec![3, 5, 7];
    model.step(&mut sst, &next).unwrap();
    let sl = model.download_logits(&sst).unwrap();
    for (i, p) in same.iter().enumerate() {
        let mut longer = p.to_vec();
        longer.push(next[i]);
        assert_rel(
            &format!("batched step {i}"),
            &sl[i * s.vocab..(i + 1) * s.vocab],
            &model.logits_for(&longer).unwrap(),
            tol,
        );
    }

    // Sampled generation is reproducible with a seed and differs with another seed.
    let sample = |seed: u64| {
        let opts = GenerateOptions {
            sampling: SamplingParams {
                temperature: 3.0,
                top_k: 30,
                top_p: 0.999,
                min_p: 0.0001,
                repetition_penalty: 1.1,
                seed,
            },
            max_new_tokens: 30,
            stop_ids: vec![],
            ignore_eos: true,
        };
        BatchGenerator::new(&model, &[ids[..5].to_vec()], &opts)
            .unwrap()
            .run()
            .unwrap()
            .remove(0)
    };
    assert_eq!(sample(1), sample(1));
    assert_ne!(sample(1), sample(2));
}
