//! Decode-loop checks shared by the model tests of every backend: several states on one
//! model, stepped in turn, restored and reset between steps, each decode exactly as it
//! does alone. On CUDA each step is a replayed graph, on wgpu a replay of the kept
//! dispatches, keyed by (model, state, batch), so a key that mixed two states or models
//! up, or outlived a state's buffers, shows up here.

use mamba_gpu::model::{LoadOptions, MambaModel, State, SyntheticModel};
use mamba_gpu::{Backend, DType};

use super::rel_l2;

/// The shape of [`small_model`]: 3 layers, D = 32, N = 8, vocab 64.
pub const SMALL: SyntheticModel = SyntheticModel {
    hidden: 32,
    layers: 3,
    state: 8,
    conv: 4,
    vocab: 64,
    mamba2: None,
};

/// A small random-weight model ([`SMALL`]).
pub fn small_model<B: Backend>(be: B, seed: u64, weights: DType) -> MambaModel<B> {
    let shape = SMALL;
    let bytes = shape.checkpoint(seed, weights).expect("checkpoint");
    let opts = LoadOptions {
        progress: false,
        ..LoadOptions::default()
    };
    MambaModel::from_bytes(be, shape.config_json().as_bytes(), &[&bytes], &opts).expect("load")
}

/// What one greedy step saw: the ids chosen from the current logits, then the logits
/// after stepping on them.
pub type Trace = Vec<(Vec<u32>, Vec<f32>)>;

/// Greedy step `i` on a prefilled state: argmax on the device, then every third step
/// feeds the ids back from the host (`step`, which writes them into the state's id
/// buffer), the others straight from the device (`step_device_ids`).
pub fn greedy_step<B: Backend>(
    m: &MambaModel<B>,
    st: &mut State<B>,
    i: usize,
) -> (Vec<u32>, Vec<f32>) {
    let ids = m.greedy_ids(st).expect("greedy_ids");
    if i % 3 == 2 {
        m.step(st, &ids).expect("step");
    } else {
        m.step_device_ids(st).expect("step_device_ids");
    }
    (ids, m.download_logits(st).expect("logits"))
}

/// A fresh state, prefilled with `prompts` (one per sequence).
pub fn prefilled<B: Backend>(m: &MambaModel<B>, prompts: &[&[u32]]) -> State<B> {
    let mut st = m.new_state(prompts.len()).expect("state");
    m.prefill(&mut st, prompts).expect("prefill");
    st
}

/// `steps` greedy steps from `prompts` on a fresh state.
pub fn decode_alone<B: Backend>(m: &MambaModel<B>, prompts: &[&[u32]], steps: usize) -> Trace {
    let mut st = prefilled(m, prompts);
    (0..steps).map(|i| greedy_step(m, &mut st, i)).collect()
}

/// Asserts equal ids and logits within `tol` (relative L2) step by step.
pub fn assert_same_trace(what: &str, got: &Trace, want: &Trace, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: step count");
    for (i, ((gi, gl), (wi, wl))) in got.iter().zip(want).enumerate() {
        assert_eq!(gi, wi, "{what}: ids before step {i}");
        let e = rel_l2(gl, wl);
        assert!(
            e <= tol,
            "{what}: logits after step {i}: rel L2 {e:.3e} > {tol:.1e}"
        );
    }
}

/// Three states (batch 1, 2 and 1) on one model, stepped in turn, decode as each does
/// alone; a state restored in place replays its steps; a reset state starts afresh.
pub fn check_interleaved_states<B: Backend>(m: &MambaModel<B>, tol: f64) {
    const STEPS: usize = 9;
    let pa: &[&[u32]] = &[&[1, 2, 3, 4, 5]];
    let pb: &[&[u32]] = &[&[7, 8, 9], &[10, 11, 12]];
    let pc: &[&[u32]] = &[&[20, 30, 40, 50]];
    let want: Vec<Trace> = [pa, pb, pc]
        .iter()
        .map(|p| decode_alone(m, p, STEPS))
        .collect();
    let mut states: Vec<State<B>> = [pa, pb, pc].iter().map(|p| prefilled(m, p)).collect();
    let mut got: Vec<Trace> = vec![Vec::new(); 3];
    for i in 0..STEPS {
        for (st, g) in states.iter_mut().zip(&mut got) {
            g.push(greedy_step(m, st, i));
        }
    }
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_same_trace(&format!("interleaved state {k}"), g, w, tol);
    }

    // Save A, step on, restore in place (conv, ssm, logits and ids all come back):
    // stepping on the same ids gives the same logits again.
    let a = &mut states[0];
    let saved = a.save(m.backend()).expect("save");
    let first: Trace = (STEPS..STEPS + 4).map(|i| greedy_step(m, a, i)).collect();
    a.restore(m.backend(), &saved).expect("restore");
    let again: Trace = first
        .iter()
        .map(|(ids, _)| {
            m.step(a, ids).expect("step after restore");
            (ids.clone(), m.download_logits(a).expect("logits"))
        })
        .collect();
    assert_same_trace("steps after restore", &again, &first, tol);
    assert_eq!(a.tokens_seen(), &[pa[0].len() + STEPS + 4]);

    // Reset C (new buffers) and prefill it again: it decodes as a fresh state.
    let c = &mut states[2];
    c.reset(m.backend()).expect("reset");
    m.prefill(c, pc).expect("prefill after reset");
    let after_reset: Trace = (0..STEPS).map(|i| greedy_step(m, c, i)).collect();
    assert_same_trace("decode after reset", &after_reset, &want[2], tol);

    // B, untouched meanwhile, still continues as it would alone.
    let b = &mut states[1];
    let more: Trace = (STEPS..STEPS + 3).map(|i| greedy_step(m, b, i)).collect();
    let mut alone = prefilled(m, pb);
    let whole: Trace = (0..STEPS + 3)
        .map(|i| greedy_step(m, &mut alone, i))
        .collect();
    assert_same_trace("state B continued", &more, &whole[STEPS..].to_vec(), tol);
}

/// Two models sharing one backend and one state shape: a state stepped by each (keys
/// differ by model) follows that model's weights.
pub fn check_two_models<B: Backend>(m1: &MambaModel<B>, m2: &MambaModel<B>, tol: f64) {
    let p: &[&[u32]] = &[&[4, 5, 6]];
    let want1 = decode_alone(m1, p, 6);
    let want2 = decode_alone(m2, p, 6);
    let (mut s1, mut s2) = (prefilled(m1, p), prefilled(m2, p));
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    for i in 0..6 {
        got1.push(greedy_step(m1, &mut s1, i));
        got2.push(greedy_step(m2, &mut s2, i));
    }
    assert_same_trace("model 1", &got1, &want1, tol);
    assert_same_trace("model 2", &got2, &want2, tol);
}
