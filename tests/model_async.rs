//! The async path for the browser (`mamba_gpu::model::browser`, `WgpuBackend::new_async`,
//! `WgpuBackend::download_async`), run natively: the same bytes as the blocking
//! download, and greedy ids equal to the blocking `Generator`'s on the demo model, on the
//! CPU backend and on wgpu. The same path runs in headless Chromium in `tests/browser.rs`.
#![cfg(all(feature = "demo-model", not(target_arch = "wasm32")))]

#[path = "common/gpu.rs"]
mod gpu;

use mamba_gpu::model::browser::{self, AsyncDownload, AsyncGreedy};
use mamba_gpu::model::{GenerateOptions, Generator};
use mamba_gpu::{Backend, CpuBackend, HostSlice, TextModel, TextOptions};

const PROMPT: &str = "It is a truth universally acknowledged";

/// The blocking generator's greedy ids and text (eos ignored), the reference here.
fn blocking_greedy<B: Backend>(m: &TextModel<B>, n: usize) -> (Vec<u32>, String) {
    let ids = m.encode(PROMPT).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    };
    let got: Vec<u32> = Generator::new(m.model(), &ids, &opts)
        .unwrap()
        .collect::<mamba_gpu::Result<_>>()
        .unwrap();
    let text = m
        .generate(
            PROMPT,
            &TextOptions {
                max_new_tokens: n,
                ..TextOptions::default()
            },
        )
        .unwrap();
    (got, text)
}

fn check_model<B: AsyncDownload>(m: &TextModel<B>) {
    let n = 32;
    let (want, want_text) = blocking_greedy(m, n);
    assert_eq!(want.len(), n, "the reference generated {n} tokens");
    let prompt = m.encode(PROMPT).unwrap();
    let got = pollster::block_on(browser::greedy_ids(m.model(), &prompt, n)).unwrap();
    assert_eq!(
        got,
        want,
        "{}: async greedy ids",
        m.model().backend().name()
    );
    let mut pieces: Vec<String> = Vec::new();
    let text =
        pollster::block_on(m.generate_greedy_async(PROMPT, n, |p| pieces.push(p.into()))).unwrap();
    assert_eq!(text, want_text, "async greedy text");
    assert_eq!(pieces.concat(), text, "streamed pieces make the text");
    assert!(pieces.len() > 1, "text arrives in pieces: {pieces:?}");
    // EOS included and then nothing more; a budget of 0 gives nothing.
    let mut g = AsyncGreedy::new(m.model(), &prompt, 0, false).unwrap();
    assert_eq!(pollster::block_on(g.next()).unwrap(), None);
    assert!(
        AsyncGreedy::new(m.model(), &[], 4, false).is_err(),
        "empty prompt"
    );
}

#[test]
fn async_greedy_equals_generator_on_cpu() {
    check_model(&TextModel::demo(CpuBackend::new()).unwrap());
}

#[cfg(feature = "wgpu")]
#[test]
fn async_path_on_wgpu() {
    use mamba_gpu::wgpu::WgpuBackend;
    let Some(be) = gpu::or_skip(
        "wgpu",
        "async wgpu test",
        pollster::block_on(WgpuBackend::new_async()),
    ) else {
        return;
    };
    // download_async gives the bytes download gives (odd f16 count: the padded tail).
    let v: Vec<f32> = (0..1001).map(|i| i as f32 * 0.5 - 7.0).collect();
    let buf = be.upload(HostSlice::F32(&v), &[7, 143]).unwrap();
    let a = pollster::block_on(be.download_async(&buf)).unwrap();
    assert_eq!(a.to_f32(), v);
    let h: Vec<half::f16> = (0..5).map(|i| half::f16::from_f32(i as f32)).collect();
    let buf = be.upload(HostSlice::F16(&h), &[5]).unwrap();
    let a = pollster::block_on(be.download_async(&buf)).unwrap();
    assert_eq!(a.to_f32(), be.download(&buf).unwrap().to_f32());
    check_model(&TextModel::demo(be).unwrap());
}
