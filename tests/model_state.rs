//! A saved state continues the sequence, on every backend: prefill, save, restore into a
//! fresh state (directly, through bytes, through a file), continue ⇒ the same ids and
//! bit-for-bit the same logits as the run that was never interrupted; at batch 1 and
//! batch > 1 (prompts of one length and of different lengths), with the demo model and
//! a fixture model; also mid-generation through `BatchGenerator::into_state`. Then the
//! byte format's refusals (CPU): wrong magic, another version, every truncation, every
//! single-byte mutation of the header and a sample of the payload, another model,
//! another weight dtype, another batch: typed errors, never a panic.
//!
//! wgpu and CUDA run through `tests/common/gpu.rs`: "SKIPPED" without the device unless
//! `MAMBA_REQUIRE` names the backend.

mod common;

use std::path::Path;

use common::model_io::{quiet, tmp};
use mamba_gpu::model::{
    BatchGenerator, GenerateOptions, HostState, LoadOptions, MambaModel, SamplingParams, State,
    WeightDType,
};
use mamba_gpu::{Backend, CpuBackend, Error};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn demo<B: Backend>(be: B) -> MambaModel<B> {
    let dir = root().join("examples/demo_model");
    MambaModel::load(be, dir, &quiet()).expect("demo model")
}

fn fixture<B: Backend>(be: B, name: &str, weights: WeightDType) -> MambaModel<B> {
    let dir = root().join("tests/fixtures/models").join(name);
    let opts = LoadOptions {
        weight_dtype: weights,
        ..quiet()
    };
    MambaModel::load(be, dir, &opts).expect("fixture model")
}

/// Per step: the logits the ids were chosen from, and the ids (greedy).
type Trace = Vec<(Vec<u32>, Vec<f32>)>;

/// `steps` greedy steps on a prefilled state, alternating the device-id and host-id
/// paths; records the logits before each choice and once more at the end.
fn continue_greedy<B: Backend>(m: &MambaModel<B>, st: &mut State<B>, steps: usize) -> Trace {
    let mut t = Trace::new();
    for i in 0..steps {
        let logits = m.download_logits(st).expect("logits");
        let ids = m.greedy_ids(st).expect("greedy ids");
        if i % 2 == 0 {
            m.step_device_ids(st).expect("step_device_ids");
        } else {
            m.step(st, &ids).expect("step");
        }
        t.push((ids, logits));
    }
    t.push((Vec::new(), m.download_logits(st).expect("logits")));
    t
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(what: &str, got: &Trace, want: &Trace) {
    assert_eq!(got.len(), want.len(), "{what}: trace length");
    for (i, ((gi, gl), (wi, wl))) in got.iter().zip(want).enumerate() {
        assert_eq!(gi, wi, "{what}: ids of step {i}");
        assert!(
            bits(gl) == bits(wl),
            "{what}: logits before step {i} differ (first: {:?} vs {:?})",
            &gl[..4.min(gl.len())],
            &wl[..4.min(wl.len())]
        );
    }
}

fn greedy(max_new_tokens: usize, repetition_penalty: f32) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingParams {
            repetition_penalty,
            ..SamplingParams::greedy()
        },
        max_new_tokens,
        ignore_eos: true,
        ..GenerateOptions::default()
    }
}

/// Every continuation check for one model and one batch of prompts.
fn check_continuation<B: Backend>(m: &MambaModel<B>, prompts: &[&[u32]], tag: &str) {
    const STEPS: usize = 6;
    let batch = prompts.len();
    let mut st = m.new_state(batch).expect("state");
    m.prefill(&mut st, prompts).expect("prefill");
    let want = continue_greedy(m, &mut st, STEPS);

    let mut st = m.new_state(batch).expect("state");
    m.prefill(&mut st, prompts).expect("prefill");
    let host = st.save(m.backend()).expect("save");
    // Another sequence runs on the model meanwhile: nothing of it may leak in.
    drop(st);
    let mut other = m.new_state(batch).expect("state");
    m.prefill(&mut other, &vec![&[3u32, 1, 4][..]; batch])
        .expect("prefill other");
    let _ = continue_greedy(m, &mut other, 2);

    let mut fresh = m.new_state(batch).expect("state");
    fresh.restore(m.backend(), &host).expect("restore");
    assert_eq!(fresh.tokens_seen(), host.seen.as_slice());
    assert_same(
        &format!("{tag}: restored"),
        &continue_greedy(m, &mut fresh, STEPS),
        &want,
    );

    let bytes = host.to_bytes();
    let back = HostState::from_bytes(&bytes).expect("from_bytes");
    assert_eq!(back, host, "{tag}: bytes round trip");
    let mut st = m.restore_state(&back).expect("restore_state");
    assert_same(
        &format!("{tag}: through bytes"),
        &continue_greedy(m, &mut st, STEPS),
        &want,
    );

    let dir = tmp(&format!("state-{}-{tag}", m.backend().name()));
    let file = dir.join("state.mamba");
    host.save_to(&file).expect("save_to");
    let loaded = HostState::load_from(&file).expect("load_from");
    let mut st = m.restore_state(&loaded).expect("restore_state");
    assert_same(
        &format!("{tag}: through a file"),
        &continue_greedy(m, &mut st, STEPS),
        &want,
    );
    let _ = std::fs::remove_dir_all(dir);

    // The generator: from a restored prefill, and from the middle of a generation
    // (greedy with a repetition penalty: the host path, which reads the histories).
    let owned: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    for penalty in [1.0, 1.3] {
        let whole = BatchGenerator::new(m, &owned, &greedy(10, penalty))
            .expect("generator")
            .run()
            .expect("run");
        let st = m.restore_state(&host).expect("restore_state");
        let cont = BatchGenerator::from_state(m, st, owned.clone(), &greedy(10, penalty))
            .expect("from_state")
            .run()
            .expect("run");
        assert_eq!(cont, whole, "{tag}: generator from a restored prefill");

        let mut g = BatchGenerator::new(m, &owned, &greedy(4, penalty)).expect("generator");
        while g.next_tokens().expect("next").is_some() {}
        let history = g.histories().to_vec();
        let saved = g
            .into_state()
            .expect("into_state")
            .save(m.backend())
            .expect("save");
        let st = m
            .restore_state(&HostState::from_bytes(&saved.to_bytes()).expect("bytes"))
            .expect("restore");
        let rest = BatchGenerator::from_state(m, st, history, &greedy(6, penalty))
            .expect("from_state")
            .run()
            .expect("run");
        for (i, (r, w)) in rest.iter().zip(&whole).enumerate() {
            assert_eq!(
                r[..],
                w[4..],
                "{tag}: sequence {i} continued mid-generation"
            );
        }
    }
}

fn check_all<B: Backend>(be: &B) {
    let m = demo(be);
    let a: &[u32] = &[12, 400, 33, 1021, 7, 58, 250];
    check_continuation(&m, &[a], "demo batch 1");
    check_continuation(
        &m,
        &[a, &[5], &[9, 8, 7, 6, 5, 4, 3, 2, 1, 900]],
        "demo ragged",
    );
    let f = fixture(be, "untied_bias_v389", WeightDType::Auto);
    check_continuation(&f, &[&[1, 2, 3, 4], &[388, 0, 17, 5]], "fixture batch 2");
    // Mamba-2 (three conv parts per layer, joined per sequence on the host; 2 groups)
    // with ragged prompts, and Falcon-Mamba.
    let m2 = fixture(be, "mamba2_g2_untied_bias", WeightDType::Auto);
    check_continuation(
        &m2,
        &[&[1, 2, 3, 4, 5], &[299], &[7, 8, 9]],
        "mamba2 ragged",
    );
    let fm = fixture(be, "falcon_tiny_tied", WeightDType::Auto);
    check_continuation(&fm, &[&[1, 2, 3], &[200, 100, 50]], "falcon batch 2");
}

#[test]
fn restored_state_continues_cpu() {
    check_all(&CpuBackend::new());
}

#[cfg(feature = "wgpu")]
#[test]
fn restored_state_continues_wgpu() {
    use mamba_gpu::wgpu::WgpuBackend;
    if let Some(be) = common::gpu::or_skip("wgpu", "wgpu state tests", WgpuBackend::new()) {
        check_all(&be);
    }
}

#[cfg(feature = "cuda")]
#[test]
fn restored_state_continues_cuda() {
    use mamba_gpu::cuda::CudaBackend;
    if let Some(be) = common::gpu::or_skip("cuda", "cuda state tests", CudaBackend::new(0)) {
        check_all(&be);
    }
}

fn saved_tiny() -> (MambaModel<CpuBackend>, HostState) {
    let m = fixture(CpuBackend::new(), "tiny_tied", WeightDType::Auto);
    let mut st = m.new_state(2).unwrap();
    m.prefill(&mut st, &[&[1, 2, 3], &[4, 5]]).unwrap();
    m.step(&mut st, &[7, 8]).unwrap();
    let host = st.save(m.backend()).unwrap();
    (m, host)
}

fn format_what(e: &Error) -> &'static str {
    match e {
        Error::StateFormat { what, .. } => what,
        other => panic!("expected StateFormat, got {other}"),
    }
}

#[test]
fn saved_bytes_are_checked() {
    let (m, host) = saved_tiny();
    let bytes = host.to_bytes();
    assert_eq!(HostState::from_bytes(&bytes).unwrap(), host);

    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(
        format_what(&HostState::from_bytes(&bad).unwrap_err()),
        "magic"
    );
    let e = HostState::from_bytes(b"{\"not\": \"a state\"}").unwrap_err();
    assert_eq!(format_what(&e), "magic");
    let mut bad = bytes.clone();
    bad[8] = 1; // version 1 had no conv_channels: refused, not misread
    let e = HostState::from_bytes(&bad).unwrap_err();
    assert_eq!(format_what(&e), "version");
    assert!(e.to_string().contains("version 1"), "{e}");
    bad[8] = 3;
    let e = HostState::from_bytes(&bad).unwrap_err();
    assert_eq!(format_what(&e), "version");
    assert!(e.to_string().contains("version 3"), "{e}");

    // Every truncation.
    for len in 0..bytes.len() {
        let e = HostState::from_bytes(&bytes[..len]).unwrap_err();
        assert_eq!(format_what(&e), "truncated", "length {len}: {e}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        format_what(&HostState::from_bytes(&long).unwrap_err()),
        "length"
    );

    // Every bit of the header and a sample of the payload, flipped one at a time.
    let positions = (0..112).chain((112..bytes.len()).step_by(61));
    for at in positions {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[at] ^= 1 << bit;
            let e = HostState::from_bytes(&b).unwrap_err();
            let _ = format_what(&e);
        }
    }
    // A header announcing sizes far beyond the bytes there: refused before allocating.
    let mut huge = bytes.clone();
    huge[64..72].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let w = format_what(&HostState::from_bytes(&huge).unwrap_err());
    assert!(w == "header" || w == "truncated", "{w}");
    huge[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
    let _ = format_what(&HostState::from_bytes(&huge).unwrap_err());

    // Files: a missing one names the path; a bad one too.
    let dir = tmp("state-files");
    let e = HostState::load_from(dir.join("absent")).unwrap_err();
    assert!(
        matches!(&e, Error::Io { file, .. } if file.ends_with("absent")),
        "{e}"
    );
    std::fs::write(dir.join("bad"), &bytes[..50]).unwrap();
    let e = HostState::load_from(dir.join("bad")).unwrap_err();
    assert!(
        matches!(&e, Error::StateFormat { file, what: "truncated", .. } if file.ends_with("bad")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
    drop(m);
}

#[test]
fn restore_refuses_another_model_or_batch() {
    let (m, host) = saved_tiny();
    // Another architecture.
    let other = fixture(CpuBackend::new(), "untied_bias_v389", WeightDType::Auto);
    let e = other.restore_state(&host).err().unwrap();
    assert!(
        matches!(
            &e,
            Error::StateModel {
                what: "num_layers" | "hidden_size",
                ..
            }
        ),
        "{e}"
    );
    let mut st = other.new_state(2).unwrap();
    let e = st.restore(other.backend(), &host).unwrap_err();
    assert!(matches!(&e, Error::StateModel { .. }), "{e}");
    // The same architecture with other weight storage.
    let f32w = fixture(CpuBackend::new(), "f16_rank8", WeightDType::F32);
    let f16w = fixture(CpuBackend::new(), "f16_rank8", WeightDType::F16);
    let mut st = f16w.new_state(1).unwrap();
    f16w.prefill(&mut st, &[&[1, 2]]).unwrap();
    let saved = st.save(f16w.backend()).unwrap();
    let e = f32w.restore_state(&saved).err().unwrap();
    assert!(
        matches!(
            &e,
            Error::StateModel {
                what: "weight dtype",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("f16") && e.to_string().contains("f32"),
        "{e}"
    );
    // Same shapes, another config value that changes the numbers.
    let mut h = host.clone();
    h.model.config_hash ^= 1;
    let e = m.restore_state(&h).err().unwrap();
    assert!(matches!(&e, Error::StateModel { .. }), "{e}");
    // Another batch: refused by State::restore, and the state is left as it was.
    let mut one = m.new_state(1).unwrap();
    m.prefill(&mut one, &[&[9, 9]]).unwrap();
    let before = one.save(m.backend()).unwrap();
    let e = one.restore(m.backend(), &host).unwrap_err();
    assert!(
        matches!(&e, Error::StateMismatch { what: "batch", got, expected } if got == &[2] && expected == &[1]),
        "{e}"
    );
    assert_eq!(one.save(m.backend()).unwrap(), before);
    // A state that never saw a token has no logits to continue from.
    let st = m.new_state(1).unwrap();
    let e = BatchGenerator::from_state(&m, st, vec![vec![]], &GenerateOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, Error::StateNotPrefilled { sequence: 0 }), "{e}");
}
