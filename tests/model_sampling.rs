//! Generation and sampling on the CPU backend: the greedy generator against the naive
//! reference (streaming, stop ids, EOS, repetition penalty), the sampler on synthetic
//! logits (reproducibility, top-k / top-p / min-p, repetition penalty, parameter
//! validation), and the text stream that never splits a character.

mod common;

use common::model_io::{load_bytes, synth};
use common::model_synth::{Synth, prompt, reference_logits, to_safetensors};
use mamba_gpu::Error;
use mamba_gpu::model::{
    GenerateOptions, Generator, Sampler, SamplingParams, apply_repetition_penalty,
    filtered_distribution,
};
use safetensors::Dtype;

#[test]
fn greedy_generator_streams_and_stops_at_eos() {
    let (s, t) = synth();
    let m = load_bytes(&s.config_json(), &to_safetensors(&t, Dtype::F32)).unwrap();
    let p = prompt(8, 6, s.vocab);
    let opts = GenerateOptions {
        max_new_tokens: 10,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let ids: Vec<u32> = Generator::new(&m, &p, &opts)
        .unwrap()
        .collect::<mamba_gpu::Result<_>>()
        .unwrap();
    assert_eq!(ids.len(), 10);
    // Greedy = argmax of the reference logits at every step.
    let mut ctx = p.clone();
    for &id in &ids {
        let l = reference_logits(&s, &t, &ctx);
        assert_eq!(id, mamba_gpu::model::sample::argmax(&l));
        ctx.push(id);
    }
    // Stop at a stop id (included in the output, as HF does).
    let stop = ids[3];
    let first = ids.iter().position(|&x| x == stop).unwrap();
    let opts2 = GenerateOptions {
        stop_ids: vec![stop],
        ..opts.clone()
    };
    let got: Vec<u32> = Generator::new(&m, &p, &opts2)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, ids[..=first]);
    // EOS from the config stops unless ignored.
    let s_eos = Synth {
        eos: ids[0],
        ..Synth::default()
    };
    let m2 = load_bytes(&s_eos.config_json(), &to_safetensors(&t, Dtype::F32)).unwrap();
    let opts3 = GenerateOptions {
        ignore_eos: false,
        ..opts.clone()
    };
    let got: Vec<u32> = Generator::new(&m2, &p, &opts3)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, vec![ids[0]]);
    let mut g = Generator::new(&m2, &p, &opts).unwrap();
    assert_eq!(g.by_ref().count(), 10);
    let st = g.stats();
    assert_eq!(st.prompt_tokens, 6);
    assert_eq!(st.decode_steps, 9);
    // Greedy with a repetition penalty runs on the host: the result follows the rule.
    let opts4 = GenerateOptions {
        sampling: SamplingParams {
            repetition_penalty: 1.5,
            ..SamplingParams::greedy()
        },
        ..opts.clone()
    };
    let pen: Vec<u32> = Generator::new(&m, &p, &opts4)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut ctx = p.clone();
    for &id in &pen {
        let mut l = reference_logits(&s, &t, &ctx);
        apply_repetition_penalty(&mut l, &ctx, 1.5);
        assert_eq!(id, mamba_gpu::model::sample::argmax(&l));
        ctx.push(id);
    }
}

// ---------------------------------------------------------------------------------------
// Sampling on synthetic logits.

fn logits() -> Vec<f32> {
    vec![2.0, 1.0, 0.5, 3.0, -1.0, 0.0, 2.5, -2.0]
}

fn draw(params: SamplingParams, n: usize, history: &[u32]) -> Vec<u32> {
    let mut s = Sampler::new(params).unwrap();
    (0..n).map(|_| s.sample(&logits(), history)).collect()
}

fn t1(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed,
        ..SamplingParams::default()
    }
}

#[test]
fn sampling_is_reproducible_and_uses_all_tokens() {
    let a = draw(t1(5), 2000, &[]);
    assert_eq!(a, draw(t1(5), 2000, &[]));
    assert_ne!(a, draw(t1(6), 2000, &[]));
    // Every token appears; frequencies follow softmax.
    let l = logits();
    let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
    for (i, &x) in l.iter().enumerate() {
        let p = (x as f64).exp() / z;
        let f = a.iter().filter(|&&t| t == i as u32).count() as f64 / a.len() as f64;
        assert!((f - p).abs() < 0.04, "token {i}: freq {f}, p {p}");
    }
    // Greedy picks the argmax; temperature 0 ignores the seed.
    assert!(
        draw(SamplingParams::greedy(), 5, &[])
            .iter()
            .all(|&t| t == 3)
    );
}

#[test]
fn top_k_top_p_min_p_filter() {
    let sorted = [3u32, 6, 0, 1, 2, 5, 4, 7];
    let k3 = SamplingParams { top_k: 3, ..t1(1) };
    let d = filtered_distribution(&logits(), &[], &k3);
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), sorted[..3]);
    assert!((d.iter().map(|x| x.1).sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(draw(k3, 500, &[]).iter().all(|t| sorted[..3].contains(t)));

    // top-p: the smallest prefix whose mass reaches p.
    let l = logits();
    let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
    let probs: Vec<f64> = sorted
        .iter()
        .map(|&i| (l[i as usize] as f64).exp() / z)
        .collect();
    for p in [0.3f32, 0.5, 0.8, 0.95] {
        let mut cum = 0.0;
        let mut want = 0;
        while cum < p as f64 {
            cum += probs[want];
            want += 1;
        }
        let pp = SamplingParams { top_p: p, ..t1(1) };
        let d = filtered_distribution(&l, &[], &pp);
        assert_eq!(d.len(), want, "top_p {p}");
        assert!(
            draw(pp, 300, &[])
                .iter()
                .all(|t| sorted[..want].contains(t))
        );
    }

    // min-p: drop tokens below min_p × the top probability.
    let mp = SamplingParams {
        min_p: 0.3,
        ..t1(1)
    };
    let d = filtered_distribution(&l, &[], &mp);
    let keep: Vec<u32> = sorted
        .iter()
        .copied()
        .filter(|&i| (l[i as usize] - 3.0).exp() >= 0.3)
        .collect();
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), keep);
    assert!(draw(mp, 300, &[]).iter().all(|t| keep.contains(t)));

    // Temperature sharpens.
    let cold = filtered_distribution(
        &l,
        &[],
        &SamplingParams {
            temperature: 0.1,
            ..t1(1)
        },
    );
    assert!(cold[0].1 > 0.99);
}

#[test]
fn repetition_penalty_follows_hf() {
    let mut l = logits();
    apply_repetition_penalty(&mut l, &[3, 4, 3, 5], 2.0);
    assert_eq!(l, vec![2.0, 1.0, 0.5, 1.5, -2.0, 0.0, 2.5, -2.0]);
    // With the penalty, the argmax moves from 3 to 6.
    let g = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    };
    assert_eq!(draw(g, 1, &[3]), vec![6]);
    // Sampling draws from the softmax of the penalised logits.
    let pen = SamplingParams {
        repetition_penalty: 1.7,
        ..t1(3)
    };
    let hist = [3u32, 4, 0];
    let mut l = logits();
    apply_repetition_penalty(&mut l, &hist, 1.7);
    let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
    let d = filtered_distribution(&logits(), &hist, &pen);
    for (i, q) in d {
        let want = (l[i as usize] as f64).exp() / z;
        assert!((q as f64 - want).abs() < 1e-6, "token {i}: {q} vs {want}");
    }
}

#[test]
fn sampling_parameters_are_validated() {
    for (p, name) in [
        (
            SamplingParams {
                temperature: -1.0,
                ..t1(0)
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..t1(0)
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..t1(0)
            },
            "top_p",
        ),
        (
            SamplingParams {
                min_p: 2.0,
                ..t1(0)
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..t1(0)
            },
            "repetition_penalty",
        ),
    ] {
        let e = Sampler::new(p).unwrap_err();
        assert!(
            matches!(e, Error::Sampling { param, .. } if param == name),
            "{e}"
        );
    }
}

/// A byte-level BPE `tokenizer.json` with one token per byte (GPT-2's byte-to-unicode
/// alphabet) and no merges: every multi-byte character spans several tokens.
#[cfg(feature = "tokenizers")]
fn byte_tokenizer_json() -> String {
    let mut bs: Vec<u32> = (0x21..=0x7e)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let vocab: serde_json::Map<String, serde_json::Value> = bs
        .iter()
        .zip(&cs)
        .map(|(&b, &c)| (char::from_u32(c).unwrap().to_string(), b.into()))
        .collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []
        }
    })
    .to_string()
}

#[cfg(feature = "tokenizers")]
#[test]
fn text_stream_never_splits_a_character() {
    use mamba_gpu::model::TextTokenizer;
    let tok = TextTokenizer::from_bytes(byte_tokenizer_json().as_bytes(), "bytes.json").unwrap();
    let text = "héllo ✓ wörld — 日本";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.len(), text.len(), "one token per byte");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let mut stream = tok.stream();
    let mut out = String::new();
    let mut held = 0;
    for &id in &ids {
        let d = stream.push(id).unwrap();
        assert!(!d.contains('\u{FFFD}'), "delta {d:?} splits a character");
        held += d.is_empty() as usize;
        out.push_str(&d);
    }
    out.push_str(&stream.finish().unwrap());
    assert_eq!(out, text);
    assert!(held >= 8, "continuation bytes were held back ({held})");
}
