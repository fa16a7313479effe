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

// ---------------------------------------------------------------------------------------
// Messages of empty input.

#[test]
fn empty_batch_and_empty_prompt_say_what_is_wrong() {
    use mamba_gpu::model::BatchGenerator;
    let (s, t) = synth();
    let m = load_bytes(&s.config_json(), &to_safetensors(&t, Dtype::F32)).unwrap();
    let e = m.check_ids(&[]).unwrap_err();
    assert!(matches!(e, Error::NoPrompts), "{e}");
    let e = BatchGenerator::new(&m, &[], &GenerateOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, Error::NoPrompts), "{e}");
    assert!(e.to_string().contains("no prompts"), "{e}");
    let e = BatchGenerator::new(&m, &[vec![1, 2], vec![]], &GenerateOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, Error::EmptyPrompt { sequence: 1 }), "{e}");
    assert_eq!(
        e.to_string(),
        "prompt 1 has no tokens (the model needs at least one token per prompt)"
    );
}

// ---------------------------------------------------------------------------------------
// The high-level API on the embedded demo model.

#[cfg(feature = "demo-model")]
mod text_model {
    use mamba_gpu::model::{GenerateOptions, Generator, TextModel, TextOptions};
    use mamba_gpu::{CpuBackend, Error, Precision};

    const PROMPT: &str = "It is a truth universally acknowledged, that";

    fn demo() -> TextModel<CpuBackend> {
        TextModel::demo(CpuBackend::with_precision(Precision::Fast)).unwrap()
    }

    fn opts(max: usize) -> TextOptions {
        TextOptions {
            max_new_tokens: max,
            ignore_eos: true,
            ..TextOptions::default()
        }
    }

    /// The greedy ids of the low-level generator for `PROMPT`.
    fn low_level_ids(tm: &TextModel<CpuBackend>, o: &GenerateOptions) -> Vec<u32> {
        let prompt = tm.tokenizer().encode(PROMPT).unwrap();
        Generator::new(tm.model(), &prompt, o)
            .unwrap()
            .collect::<mamba_gpu::Result<_>>()
            .unwrap()
    }

    #[test]
    fn one_call_and_stream_equal_the_low_level_generator() {
        let tm = demo();
        let o = opts(40);
        let ids = low_level_ids(&tm, &o.generate_options());
        assert_eq!(ids.len(), 40);
        let want = tm.tokenizer().decode(&ids).unwrap();
        assert!(want.len() > 40, "{want:?}");
        let text = tm.generate(PROMPT, &o).unwrap();
        assert_eq!(text, want);
        let mut s = tm.stream(PROMPT, &o).unwrap();
        let pieces: Vec<String> = s.by_ref().map(|p| p.unwrap()).collect();
        assert!(pieces.len() > 10, "{pieces:?}");
        assert!(pieces.iter().all(|p| !p.is_empty()));
        assert_eq!(pieces.concat(), want);
        assert_eq!(s.generated(), ids.as_slice());
        assert_eq!(s.stopped_by(), None);
        // The embedded bytes are the files of examples/demo_model.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo_model");
        let loaded = TextModel::load(CpuBackend::with_precision(Precision::Fast), dir).unwrap();
        assert_eq!(loaded.generate(PROMPT, &o).unwrap(), want);
    }

    #[test]
    fn stop_string_spanning_two_tokens_stops_there() {
        let tm = demo();
        let o = opts(40);
        let ids = low_level_ids(&tm, &o.generate_options());
        let text = tm.tokenizer().decode(&ids).unwrap();
        // Byte offset where the text of each prefix of the ids ends.
        let ends: Vec<usize> = (0..=ids.len())
            .map(|k| tm.tokenizer().decode(&ids[..k]).unwrap().len())
            .collect();
        // A stop string made of the last character of token k and the first of token
        // k + 1, found nowhere earlier in the text.
        let (k, stop, at) = (2..ids.len() - 1)
            .find_map(|k| {
                let (a, b, c) = (ends[k], ends[k + 1], ends[k + 2]);
                if b - a < 2 || c - b < 2 || !text.is_char_boundary(b - 1) {
                    return None;
                }
                let stop = text.get(b - 1..b + 1)?;
                (text.find(stop) == Some(b - 1)).then(|| (k, stop.to_string(), b - 1))
            })
            .expect("no token pair to build a stop string from");
        let o = TextOptions {
            stop_strings: vec!["never appears \u{1F600}".into(), stop.clone()],
            ..opts(40)
        };
        let got = tm.generate(PROMPT, &o).unwrap();
        assert_eq!(got, text[..at], "stop {stop:?}");
        let mut s = tm.stream(PROMPT, &o).unwrap();
        let pieces: Vec<String> = s.by_ref().map(|p| p.unwrap()).collect();
        assert_eq!(pieces.concat(), text[..at]);
        assert_eq!(s.stopped_by(), Some(stop.as_str()));
        // It stopped at the token completing the stop string, not later.
        assert_eq!(s.generated(), &ids[..k + 2]);
    }

    #[test]
    fn stop_id_max_tokens_and_cancellation() {
        let tm = demo();
        let ids = low_level_ids(&tm, &opts(40).generate_options());
        let stop = ids[6];
        let first = ids.iter().position(|&x| x == stop).unwrap();
        let o = TextOptions {
            stop_ids: vec![stop],
            ..opts(40)
        };
        let mut s = tm.stream(PROMPT, &o).unwrap();
        let text: String = s.by_ref().map(|p| p.unwrap()).collect();
        assert_eq!(s.generated(), &ids[..=first]);
        assert_eq!(text, tm.tokenizer().decode(&ids[..=first]).unwrap());
        let mut s = tm.stream(PROMPT, &opts(3)).unwrap();
        let text: String = s.by_ref().map(|p| p.unwrap()).collect();
        assert_eq!(s.generated(), &ids[..3]);
        assert_eq!(text, tm.tokenizer().decode(&ids[..3]).unwrap());
        // Lazy: one piece costs a token or two, not the whole budget; dropping the
        // stream is all a cancellation takes.
        let mut s = tm.stream(PROMPT, &opts(40)).unwrap();
        assert!(s.next().unwrap().is_ok());
        assert!(s.generated().len() < 5, "{}", s.generated().len());
        drop(s);
    }

    #[test]
    fn bad_options_and_empty_text_are_typed_errors() {
        let tm = demo();
        let mut o = opts(4);
        o.sampling.temperature = -1.0;
        let e = tm.generate(PROMPT, &o).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Sampling {
                    param: "temperature",
                    ..
                }
            ),
            "{e}"
        );
        let o = TextOptions {
            stop_strings: vec!["x".into(), String::new()],
            ..opts(4)
        };
        let e = tm.stream(PROMPT, &o).err().unwrap();
        assert!(
            matches!(
                e,
                Error::GenerateOption {
                    option: "stop_strings",
                    ..
                }
            ),
            "{e}"
        );
        let o = TextOptions {
            stop_ids: vec![2048],
            ..opts(4)
        };
        let e = tm.generate(PROMPT, &o).unwrap_err();
        assert!(
            matches!(
                e,
                Error::GenerateOption {
                    option: "stop_ids",
                    ..
                }
            ),
            "{e}"
        );
        let e = tm.generate("", &opts(4)).unwrap_err();
        assert!(
            matches!(&e, Error::EmptyTextPrompt { text } if text.is_empty()),
            "{e}"
        );
        assert!(e.to_string().contains("encodes to no tokens"), "{e}");
    }
}
