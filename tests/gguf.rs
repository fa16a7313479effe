//! GGUF files made by llama.cpp's converter (`tests/fixtures/gguf`, written by
//! `tools/make_gguf_fixtures.sh`) load and give the logits of the same model: against
//! transformers' logits of the source checkpoint (`tests/fixtures/models/*/
//! expected.safetensors`, the demo model's held-out loss), and against our own load
//! of that checkpoint in the same weight dtype. Q8_0 files hold the very bits our
//! quantizer makes. The tokenizer rebuilt from the metadata encodes and decodes as the
//! model's tokenizer.json (and, when llama.cpp's sources are at hand, as Hugging Face's
//! GPT-NeoX and GPT-2 tokenizers did on llama.cpp's own test strings). Hostile files:
//! `tests/gguf_hostile.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::model_io::quiet;
use common::rel_l2;
use mamba_gpu::model::{
    Family, Linear, LoadOptions, MambaModel, TextModel, TextTokenizer, WeightDType,
};
use mamba_gpu::quant::Q8Matrix;
use mamba_gpu::{Backend, CpuBackend, Error, HostVec, Precision};
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn gguf(name: &str) -> PathBuf {
    root()
        .join("tests/fixtures/gguf")
        .join(format!("{name}.gguf"))
}

fn model_dir(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

fn opts(w: WeightDType) -> LoadOptions {
    LoadOptions {
        weight_dtype: w,
        ..quiet()
    }
}

/// (prompt ids, transformers' last-position logits) of a model fixture.
fn reference(dir: &Path) -> Vec<(Vec<u32>, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    for i in 0.. {
        let Ok(ids) = st.tensor(&format!("prompt_{i}_ids")) else {
            break;
        };
        let ids: Vec<u32> = match ids.dtype() {
            safetensors::Dtype::I64 => ids
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect(),
            _ => ids
                .data()
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect(),
        };
        let logits =
            bytemuck::pod_collect_to_vec(st.tensor(&format!("prompt_{i}_logits")).unwrap().data());
        out.push((ids, logits));
    }
    assert!(!out.is_empty(), "{}: no prompts", dir.display());
    out
}

/// Worst relative L2 over the fixture's prompts of the GGUF file's logits vs
/// transformers' and vs our load of the source checkpoint with `ours`, and of that load
/// vs transformers.
struct Diffs {
    gguf_hf: f64,
    gguf_ours: f64,
    ours_hf: f64,
}

fn compare(file: &str, model: &str, theirs: WeightDType, ours: WeightDType) -> Diffs {
    let be = CpuBackend::new();
    let g = MambaModel::load(be.clone(), gguf(file), &opts(theirs))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let st = MambaModel::load(be, model_dir(model), &opts(ours)).unwrap();
    // The token ids aside: these files have no vocabulary, where config.json's reader
    // takes transformers' defaults.
    let mut want = st.config().clone();
    if g.config().eos_token_id.is_none() {
        (want.eos_token_id, want.bos_token_id, want.pad_token_id) = (None, None, None);
    }
    // Nor is Mamba-2's chunk_size (no effect on the result) in the file.
    if let (Family::Mamba2(a), Family::Mamba2(b)) = (&g.config().family, &mut want.family) {
        b.chunk_size = a.chunk_size;
    }
    assert_eq!(
        g.config(),
        &want,
        "{file}: config differs from config.json's"
    );
    let mut d = Diffs {
        gguf_hf: 0.0,
        gguf_ours: 0.0,
        ours_hf: 0.0,
    };
    for (ids, hf) in reference(&model_dir(model)) {
        let (a, b) = (g.logits_for(&ids).unwrap(), st.logits_for(&ids).unwrap());
        d.gguf_hf = d.gguf_hf.max(rel_l2(&a, &hf));
        d.gguf_ours = d.gguf_ours.max(rel_l2(&a, &b));
        d.ours_hf = d.ours_hf.max(rel_l2(&b, &hf));
    }
    println!(
        "{file}.gguf ({theirs:?}): logits rel L2 vs transformers {:.3e}, vs our {model} \
         safetensors load ({ours:?}) {:.3e} (which is {:.3e} from transformers)",
        d.gguf_hf, d.gguf_ours, d.ours_hf
    );
    d
}

#[test]
fn f32_conversions_match_transformers_as_the_safetensors_do() {
    // The safetensors loads are held to 1e-4 (tests/common/model_fixtures.rs). These
    // files hold the same values in f32, but A = -exp(A_log) computed by torch in the
    // checkpoint's dtype: for the f16 checkpoint (f16_rank8) that is an f16 exp,
    // relative error up to 4.6e-4 in A, even with --outtype f32; for the f32 ones
    // torch's f32 exp, which differs from Rust's in the last bit of some elements.
    let mut failed = Vec::new();
    for (file, model, vs_ours) in [
        ("f16_rank8_f32", "f16_rank8", 1e-4),
        ("falcon_tiny_tied_f32", "falcon_tiny_tied", 1e-6),
        ("mamba2_g2_untied_bias_f32", "mamba2_g2_untied_bias", 1e-6),
    ] {
        let d = compare(file, model, WeightDType::Auto, WeightDType::F32);
        if d.gguf_hf > 1e-4 || d.gguf_ours > vs_ours {
            failed.push(file);
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn f16_conversion_matches_our_f16_load() {
    // The converter rounds to f16 as half::f16::from_f32 does (to nearest even); the
    // 1-D tensors, conv1d and A stay f32, as our F16 load keeps them.
    let d = compare(
        "untied_bias_v389_f16",
        "untied_bias_v389",
        WeightDType::Auto,
        WeightDType::F16,
    );
    assert!(d.gguf_ours <= 1e-6, "{:.3e} vs our F16 load", d.gguf_ours);
    assert!(
        d.gguf_hf <= 2.0 * d.ours_hf + 1e-6,
        "{:.3e} vs transformers",
        d.gguf_hf
    );
}

#[test]
fn q8_0_conversions_match_our_q8_0_load() {
    // The projections are the same bits (below); what differs: the file's embedding
    // (the lookup) and x_proj are Q8_0 too, dequantized here, where our own Q8_0 load
    // keeps the checkpoint's floats. On these tiny models (d_model 32 and 64) that
    // moves the logits by about as much as the projections' quantization does (that
    // those tensors are the checkpoint quantized by our quantizer is checked exactly in
    // `q8_0_blocks_are_our_quantizer_bit_for_bit`).
    let mut failed = Vec::new();
    for (file, model) in [
        ("f16_rank8_q8_0", "f16_rank8"),
        ("falcon_tiny_tied_q8_0", "falcon_tiny_tied"),
    ] {
        let d = compare(file, model, WeightDType::Auto, WeightDType::Q8_0);
        if d.gguf_hf > 5e-2 || d.gguf_ours > 5e-2 {
            failed.push(file);
        }
        // The file dequantized into f32 matmuls: only the order of the additions and
        // the f16 rounding of the float copies (embedding, x_proj) differ.
        let be = CpuBackend::new();
        let q = MambaModel::load(be.clone(), gguf(file), &quiet()).unwrap();
        let f = MambaModel::load(be, gguf(file), &opts(WeightDType::F32)).unwrap();
        assert!(q.weights().q8 && !f.weights().q8);
        let ids = &reference(&model_dir(model))[0].0;
        let e = rel_l2(&q.logits_for(ids).unwrap(), &f.logits_for(ids).unwrap());
        println!("{file}.gguf: Q8_0 matmuls vs the file dequantized to f32: rel L2 {e:.3e}");
        if e > 2e-3 {
            failed.push(file);
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}

fn q8_parts(be: &CpuBackend, l: &Linear<CpuBackend>) -> (Vec<u32>, Vec<u16>) {
    let Linear::Q8 { q, d } = l else {
        panic!("not Q8_0")
    };
    let (HostVec::U32(q), HostVec::F16(d)) = (be.download(q).unwrap(), be.download(d).unwrap())
    else {
        panic!("unexpected dtypes")
    };
    (q, d.iter().map(|x| x.to_bits()).collect())
}

#[test]
fn q8_0_blocks_are_our_quantizer_bit_for_bit() {
    // llama.cpp's converter (gguf-py's Q8_0, "bit-exact with ggml's reference") and our
    // Q8Matrix::quantize of the same checkpoint give identical quants and scales.
    for (file, dir) in [
        ("demo_q8_0", root().join("examples/demo_model")),
        ("f16_rank8_q8_0", model_dir("f16_rank8")),
        ("falcon_tiny_tied_q8_0", model_dir("falcon_tiny_tied")),
    ] {
        let be = CpuBackend::new();
        let g = MambaModel::load(be.clone(), gguf(file), &opts(WeightDType::Q8_0)).unwrap();
        let s = MambaModel::load(be.clone(), &dir, &opts(WeightDType::Q8_0)).unwrap();
        let (gw, sw) = (g.weights(), s.weights());
        let mut n = 0;
        for (i, (a, b)) in gw.layers.iter().zip(&sw.layers).enumerate() {
            for (what, x, y) in [
                ("w_x", &a.w_x, &b.w_x),
                ("w_z", &a.w_z, &b.w_z),
                ("out_w", &a.out_w, &b.out_w),
            ] {
                let (x, y) = (q8_parts(&be, x), q8_parts(&be, y));
                assert!(x == y, "{file}: layer {i} {what} differs");
                n += x.0.len() * 4;
            }
        }
        let (x, y) = (gw.lm_head.as_ref().unwrap(), sw.lm_head.as_ref().unwrap());
        assert!(
            q8_parts(&be, x) == q8_parts(&be, y),
            "{file}: lm_head differs"
        );
        // The tensors the file has in Q8_0 but the model keeps in float (the embedding
        // lookup and x_proj), loaded in f32: exactly d·q of our quantization.
        let f = MambaModel::load(be.clone(), gguf(file), &opts(WeightDType::F32)).unwrap();
        let st_bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&st_bytes).unwrap();
        let ours = |name: &str| {
            let t = st.tensor(name).unwrap();
            let (rows, cols) = (t.shape()[0], t.shape()[1]);
            let w: Vec<f32> = match t.dtype() {
                safetensors::Dtype::F16 => t
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => bytemuck::pod_collect_to_vec(t.data()),
            };
            Q8Matrix::quantize(&w, rows, cols).unwrap().dequantize()
        };
        let f32s = |b: &<CpuBackend as Backend>::Buffer| be.download(b).unwrap().to_f32();
        assert!(
            f32s(&f.weights().embedding) == ours("backbone.embeddings.weight"),
            "{file}: embedding"
        );
        let l0 = &f.weights().layers[0];
        let xp: Vec<f32> = [&l0.w_dt, &l0.w_b, &l0.w_c]
            .iter()
            .flat_map(|b| f32s(b))
            .collect();
        assert!(
            xp == ours("backbone.layers.0.mixer.x_proj.weight"),
            "{file}: x_proj"
        );
        println!(
            "{file}.gguf: {n} projection weights and the head: Q8_0 bits identical; \
             embedding and layer-0 x_proj: d·q identical"
        );
    }
}

#[test]
fn demo_q8_0_loss_is_within_1_percent_of_transformers() {
    let v = common::demo_val::load();
    let n = v.windows.len();
    let fast = || CpuBackend::with_precision(Precision::Fast);
    let g = MambaModel::load(fast(), gguf("demo_q8_0"), &quiet()).unwrap();
    assert!(g.weights().q8, "a Q8_0 file loads as Q8_0 by default");
    let ours = common::demo_val::demo_model(fast(), WeightDType::Q8_0);
    let (lg, lo) = (
        common::demo_val::nll(&g, &v.windows, n),
        common::demo_val::nll(&ours, &v.windows, n),
    );
    let t = v.transformers_nll;
    println!(
        "demo validation loss over {n} windows: transformers (f16 weights) {t:.5}, \
         demo_q8_0.gguf {lg:.5} ({:+.3} %), our Q8_0 load of the safetensors {lo:.5} ({:+.3} %)",
        100.0 * (lg - t) / t,
        100.0 * (lo - t) / t
    );
    assert!((lg - t).abs() / t <= 0.01, "{lg} vs {t}");
}

#[test]
fn demo_f16_when_generated() {
    // demo_f16.gguf (2.9 MB) is not committed: tools/make_gguf_fixtures.sh --demo-f16.
    let path = gguf("demo_f16");
    if !path.exists() {
        common::gpu::say("demo_f16_when_generated SKIPPED: no tests/fixtures/gguf/demo_f16.gguf");
        return;
    }
    let v = common::demo_val::load();
    let n = v.windows.len();
    let fast = || CpuBackend::with_precision(Precision::Fast);
    let g = MambaModel::load(fast(), &path, &quiet()).unwrap();
    let l = common::demo_val::nll(&g, &v.windows, n);
    let t = v.transformers_nll;
    println!("demo_f16.gguf validation loss {l:.5}, transformers {t:.5}");
    assert!((l - t).abs() / t <= 1e-4, "{l} vs {t}");
}

#[test]
fn text_model_loads_a_gguf_file_alone() {
    let tm = TextModel::load(CpuBackend::new(), gguf("demo_q8_0")).unwrap();
    let samples: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("examples/demo_model/samples.json")).unwrap(),
    )
    .unwrap();
    for s in samples["samples"].as_array().unwrap() {
        let want: Vec<u32> = serde_json::from_value(s["prompt_ids"].clone()).unwrap();
        assert_eq!(tm.encode(s["prompt"].as_str().unwrap()).unwrap(), want);
    }
    let o = mamba_gpu::TextOptions {
        max_new_tokens: 12,
        sampling: mamba_gpu::model::SamplingParams::greedy(),
        ..Default::default()
    };
    let text = tm
        .generate("It is a truth universally acknowledged", &o)
        .unwrap();
    println!("demo_q8_0.gguf, greedy: {text:?}");
    assert!(!text.is_empty());
    // The path and the bytes give the same model.
    let bytes = std::fs::read(gguf("demo_q8_0")).unwrap();
    let tb = TextModel::from_gguf_bytes(CpuBackend::new(), &bytes, &quiet()).unwrap();
    assert_eq!(
        tb.generate("It is a truth universally acknowledged", &o)
            .unwrap(),
        text
    );
}

#[test]
fn files_without_a_tokenizer_load_as_models_not_as_text_models() {
    let path = gguf("f16_rank8_f32");
    let e = TextModel::load(CpuBackend::new(), &path).err().unwrap();
    assert!(
        matches!(&e, Error::Tokenizer { file, why } if file.ends_with("f16_rank8_f32.gguf")
            && why.contains("\"none\"")),
        "{e}"
    );
    MambaModel::load(CpuBackend::new(), &path, &quiet()).unwrap();
}

/// Random text: words, digits, punctuation, runs of spaces/tabs/newlines, accented and
/// CJK letters, emoji (with ZWJ and variation selectors), the special token.
fn random_text(rng: &mut impl Rng) -> String {
    const PIECES: &[&str] = &[
        "the",
        "The",
        " of",
        "Elizabeth",
        " Darcy",
        "said",
        "n't",
        "'s",
        "'ll",
        "I'm",
        "3",
        "42",
        "1813",
        "3.14",
        ",",
        ".",
        "!",
        "?",
        ";",
        "--",
        "\"",
        "(",
        ")",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        " \n ",
        "\r\n",
        "é",
        "ü",
        "ñ",
        "ç",
        "Å",
        "café",
        "naïve",
        "日本",
        "語",
        "中文",
        "한국",
        "Ωμέγα",
        "привет",
        "🙂",
        "🚀",
        "👩\u{200d}💻",
        "❤\u{fe0f}",
        "e\u{301}",
        "\u{a0}",
        "\u{2028}",
        "<|endoftext|>",
        "$",
        "@",
        "#",
        "ﬁ",
        "½",
        "\u{0}",
    ];
    let n = rng.random_range(0..24);
    (0..n)
        .map(|_| {
            if rng.random_bool(0.15) {
                // A random printable or non-ASCII scalar.
                let c = rng.random_range(0x20u32..0x3000);
                char::from_u32(c).unwrap_or('x').to_string()
            } else {
                PIECES[rng.random_range(0..PIECES.len())].to_string()
            }
        })
        .collect()
}

#[test]
fn gguf_tokenizer_matches_tokenizer_json() {
    let json =
        TextTokenizer::from_file(&root().join("examples/demo_model/tokenizer.json")).unwrap();
    let g = TextTokenizer::from_gguf_file(&gguf("demo_q8_0")).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (n, mut same_ids, mut same_text, mut same_decode) = (400, 0, 0, 0);
    let mut bad = Vec::new();
    for _ in 0..n {
        let s = random_text(&mut rng);
        let (a, b) = (json.encode(&s).unwrap(), g.encode(&s).unwrap());
        same_ids += (a == b) as usize;
        same_text += (json.decode(&a).unwrap() == g.decode(&b).unwrap()) as usize;
        // Decoding arbitrary ids (special and partial UTF-8 ones included).
        let ids: Vec<u32> = (0..rng.random_range(1..16))
            .map(|_| rng.random_range(0..2048))
            .collect();
        same_decode += (json.decode(&ids).unwrap() == g.decode(&ids).unwrap()) as usize;
        if a != b && bad.len() < 5 {
            bad.push((s, a, b));
        }
    }
    println!(
        "demo tokenizer, GGUF vs tokenizer.json on {n} random strings: ids equal {same_ids}, \
         decoded text equal {same_text}; {n} random id sequences decoded equal {same_decode}"
    );
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!((same_text, same_decode), (n, n));
}

/// llama.cpp's tokenizer test vocabularies, if its sources are here (the sdist that
/// tools/make_gguf_fixtures.sh unpacks): `ggml-vocab-{mpt,gpt-2}.gguf` with the ids
/// Hugging Face's tokenizers gave for the `.inp` strings (`.out`).
fn llama_models_dir() -> Option<PathBuf> {
    let base = std::env::var_os("MAMBA_GPU_LLAMA_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/mamba-gpu-llama"))
        })?;
    let d = base.join("llama_cpp_python-0.3.36/vendor/llama.cpp/models");
    d.is_dir().then_some(d)
}

#[test]
fn llama_cpp_vocab_tests_when_present() {
    let Some(dir) = llama_models_dir() else {
        common::gpu::say(
            "llama_cpp_vocab_tests_when_present SKIPPED: no llama.cpp sources (tools/make_gguf_fixtures.sh fetches them)",
        );
        return;
    };
    for name in ["mpt", "gpt-2"] {
        let vocab = dir.join(format!("ggml-vocab-{name}.gguf"));
        let tok = TextTokenizer::from_gguf_file(&vocab).unwrap();
        let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
        let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
        let marker = "\n__ggml_vocab_test__\n";
        let texts: Vec<&str> = inp
            .strip_suffix(marker)
            .unwrap_or(&inp)
            .split(marker)
            .collect();
        let want: Vec<Vec<u32>> = out
            .lines()
            .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
            .collect();
        assert_eq!(texts.len(), want.len(), "{name}: .inp/.out lengths");
        let mut same = 0;
        for (t, w) in texts.iter().zip(&want) {
            let got = tok.encode(t).unwrap();
            if &got == w {
                same += 1;
            } else {
                println!("{name}: {t:?}: ours {got:?}, Hugging Face {w:?}");
            }
        }
        println!(
            "ggml-vocab-{name}.gguf: {same} of {} test strings encode as Hugging Face's",
            texts.len()
        );
        assert_eq!(same, texts.len(), "{name}");
    }
}

#[test]
fn bf16_tensors_load_as_our_bf16_load() {
    // The converter's --outtype bf16, made here: the matrices of the f32 Falcon file
    // rounded to bf16 (to nearest even, as half::bf16::from_f32 and torch do), the 1-D
    // tensors, conv1d and A left f32, as the converter leaves them.
    let mut d =
        common::gguf_write::Doc::read(&std::fs::read(gguf("falcon_tiny_tied_f32")).unwrap());
    let mut n = 0;
    for t in &mut d.tensors {
        if t.dims.len() == 2 && t.name.ends_with(".weight") && !t.name.contains("conv1d") {
            t.ty = 30;
            t.data = t
                .data
                .chunks_exact(4)
                .flat_map(|c| {
                    half::bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            n += 1;
        }
    }
    let be = CpuBackend::new();
    let g = MambaModel::from_gguf_bytes(be.clone(), &d.bytes(), &quiet()).unwrap();
    assert_eq!(g.weight_dtype(), mamba_gpu::DType::BF16);
    let s = MambaModel::load(be, model_dir("falcon_tiny_tied"), &opts(WeightDType::BF16)).unwrap();
    let ids = &reference(&model_dir("falcon_tiny_tied"))[0].0;
    let e = rel_l2(&g.logits_for(ids).unwrap(), &s.logits_for(ids).unwrap());
    println!("falcon_tiny_tied with {n} BF16 matrices: vs our BF16 load rel L2 {e:.3e}");
    assert!(e <= 1e-6, "{e:.3e}");
}
