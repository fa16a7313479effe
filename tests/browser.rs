//! The wgpu backend on WebGPU in a browser (headless Chromium in CI: Dawn + Tint on
//! SwiftShader, a second WebGPU implementation besides wgpu + naga), against the CPU
//! reference computed in the same wasm binary.
//!
//! Run with `tools/browser_test.sh` (see README, "In the browser"). wasm-bindgen-test
//! runs each `async` test as a promise in the page; every read-back is awaited
//! (`download_async`), since nothing may block there.
//!
//! No adapter is a failure, never a skip: a browser without WebGPU must not pass.
//! Subsets of the native op suite (`tests/common/ops_suite.rs`) that fit the browser's
//! time budget: the scan at chunk boundaries and past one dispatch segment (L = 10,000),
//! the decode step, the conv (sequence and update), matmul (f32 / f16 / bf16 weights, and
//! Q8_0 with f32 and int8 activations),
//! RMSNorm, and the demo model's greedy ids against the CPU backend's and the
//! transformers ids recorded in `examples/demo_model/samples.json`.
#![cfg(all(target_arch = "wasm32", feature = "wgpu", feature = "demo-model"))]

#[allow(dead_code)]
#[path = "common/cases.rs"]
mod cases;
#[path = "browser/checks.rs"]
mod checks;

use mamba_gpu::CpuBackend;
use mamba_gpu::model::browser;
use mamba_gpu::ops::Layout;
use mamba_gpu::wgpu::WgpuBackend;
use mamba_gpu::{DType, TextModel};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

use cases::{Bc, ScanCase, St};
use checks::{ConvCase, StepCase, Tol, assert_close, gpu, log};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn adapter_is_webgpu_and_scan_path_matches_features() {
    let be = gpu().await;
    let info = be.adapter_info();
    assert_eq!(info.backend, wgpu::Backend::BrowserWebGpu, "{info:?}");
    let subgroups = be.device().features().contains(wgpu::Features::SUBGROUP);
    if !subgroups {
        assert!(
            !be.uses_subgroup_scan(),
            "no SUBGROUP feature, but the subgroup scan was chosen"
        );
    }
    // The scan kernel really built is the one chosen (from the pipeline cache).
    checks::check_scan(&be, &ScanCase::full(1, 4, 300, 16), Tol::F32).await;
    let built = be.built_pipelines();
    let (want, not) = if be.uses_subgroup_scan() {
        ("SelectiveScanSubgroup(", "SelectiveScan(")
    } else {
        ("SelectiveScan(", "SelectiveScanSubgroup(")
    };
    assert!(
        built.iter().any(|k| k.starts_with(want)) && !built.iter().any(|k| k.starts_with(not)),
        "expected {want}.. only; built {built:?}"
    );
    log(&format!(
        "scan path: {} (SUBGROUP feature: {subgroups})",
        if be.uses_subgroup_scan() {
            "subgroup"
        } else {
            "shared memory"
        }
    ));
}

#[wasm_bindgen_test]
async fn scan_at_chunk_boundaries() {
    let be = gpu().await;
    // wgpu's chunk of 256 steps (255/256/257, two chunks + 1), 4 steps per invocation,
    // 4 channels per workgroup (5 and 9 channels leave partial workgroups), dstate 1..256.
    let mut cases = Vec::new();
    for &(b, d, l, n) in &[
        (1, 3, 2, 16),
        (2, 5, 4, 16),
        (1, 9, 5, 16),
        (1, 4, 255, 16),
        (1, 4, 256, 16),
        (2, 5, 257, 16),
        (1, 3, 513, 8),
        (1, 2, 300, 64),
        (1, 2, 100, 256),
        (2, 4, 100, 1),
    ] {
        cases.push(ScanCase::full(b, d, l, n));
    }
    let base = ScanCase::full(1, 8, 257, 16);
    for (i, (state, layout, bc)) in [
        (St::None, Layout::ChannelMajor, Bc::Invariant),
        (St::Final, Layout::TokenMajor, Bc::Variable),
        (St::Carry, Layout::TokenMajor, Bc::Grouped(4)),
        (St::Carry, Layout::ChannelMajor, Bc::Grouped(2)),
    ]
    .into_iter()
    .enumerate()
    {
        cases.push(ScanCase {
            state,
            layout,
            bc,
            seed: 100 + i as u64,
            ..base
        });
    }
    cases.push(ScanCase {
        d: false,
        z: false,
        delta_bias: false,
        softplus: false,
        ..ScanCase::full(1, 4, 600, 16)
    });
    for c in &cases {
        checks::check_scan(&be, c, Tol::F32).await;
    }
    log(&format!("scan: {} boundary cases", cases.len()));
}

#[wasm_bindgen_test]
async fn scan_long_sequence_over_several_dispatches() {
    let be = gpu().await;
    // dstate 64: 2048/64 = 32 chunks of 256 steps (8,192 steps) per dispatch, so 10,000
    // steps run as two dispatches that carry the state through global memory.
    for (i, (state, layout, bc)) in [
        (St::Carry, Layout::ChannelMajor, Bc::Variable),
        (St::Final, Layout::TokenMajor, Bc::Grouped(3)),
    ]
    .into_iter()
    .enumerate()
    {
        let c = ScanCase {
            state,
            layout,
            bc,
            seed: 7 + i as u64,
            ..ScanCase::full(1, 3, 10_000, 64)
        };
        checks::check_scan(&be, &c, Tol::F32).await;
    }
    log("scan: L = 10,000 (two dispatches) passed");
}

#[wasm_bindgen_test]
async fn decode_step() {
    let be = gpu().await;
    for (i, &(batch, dim, dstate, groups)) in [
        (1, 8, 16, 0),
        (2, 33, 16, 0),
        (3, 16, 64, 4),
        (1, 5, 256, 1),
    ]
    .iter()
    .enumerate()
    {
        let c = StepCase {
            batch,
            dim,
            dstate,
            groups,
            d: i != 1,
            z: i != 2,
            dt_bias: true,
            softplus: i != 3,
            seed: 40 + i as u64,
        };
        checks::check_step(&be, &c, Tol::F32).await;
    }
}

#[wasm_bindgen_test]
async fn conv_sequence_and_update() {
    let be = gpu().await;
    let cases = [
        (1, 8, 1, 4, true, true, Layout::ChannelMajor, St::None),
        (2, 5, 17, 4, true, false, Layout::TokenMajor, St::Final),
        (1, 33, 300, 4, false, true, Layout::ChannelMajor, St::Carry),
        (2, 7, 9, 2, true, true, Layout::TokenMajor, St::Carry),
    ];
    for (i, &(batch, dim, len, width, bias, silu, layout, state)) in cases.iter().enumerate() {
        let c = ConvCase {
            batch,
            dim,
            len,
            width,
            bias,
            silu,
            layout,
            state,
            seed: 60 + i as u64,
        };
        checks::check_conv(&be, &c, Tol::F32).await;
        checks::check_conv_update(&be, &c, Tol::F32).await;
    }
}

#[wasm_bindgen_test]
async fn matmul_and_rms_norm() {
    let be = gpu().await;
    for &(m, n, k, bias) in &[(1, 1, 1, false), (3, 65, 129, true), (70, 33, 64, true)] {
        for w in [DType::F32, DType::F16, DType::BF16] {
            checks::check_matmul(&be, m, n, k, bias, w, Tol::F32).await;
        }
    }
    for &(rows, dim, residual) in &[(1, 1, false), (3, 255, true), (5, 1030, true)] {
        checks::check_rms_norm(&be, rows, dim, residual, Tol::F32).await;
    }
}

/// 8-bit weights, with f32 and with int8 activations (a second backend in the other
/// mode), across a K tile boundary of the int8 kernel (1056 = 2·512 + 32).
#[wasm_bindgen_test]
async fn matmul_q8_both_activation_modes() {
    let be = gpu().await;
    let int8 = WgpuBackend::with_options_async(mamba_gpu::wgpu::WgpuOptions {
        q8_activations: mamba_gpu::Q8Activations::Int8,
        ..Default::default()
    })
    .await
    .expect("a second WebGPU device");
    for shape in [(1, 33, 64), (3, 40, 1056), (9, 17, 96)] {
        checks::check_matmul_q8(&be, shape, false, Tol::F32).await;
    }
    for shape in [(1, 33, 64), (3, 40, 1056), (7, 17, 96)] {
        checks::check_matmul_q8(&int8, shape, true, Tol::F32).await;
    }
    log("matmul_q8 (f32 and int8 activations) passed");
}

/// Mamba-2's ops: the head-form scan (one group and several; N up to 128 over several
/// dispatches) and the grouped norm.
#[wasm_bindgen_test]
async fn ssd_scan_and_grouped_norm() {
    let be = gpu().await;
    for c in [
        (1, 1, 2, 4, 1, 16),
        (2, 37, 4, 8, 2, 16),
        (1, 600, 2, 16, 1, 128),
    ] {
        checks::check_ssd(&be, c, Tol::F32).await;
    }
    log("ssd_scan and rms_norm_grouped passed");
}

/// The demo model, greedy, eos ignored: the ids on WebGPU equal the CPU backend's (run
/// in the same wasm binary) and the transformers ids recorded beside the model.
#[wasm_bindgen_test]
async fn demo_model_greedy_ids_match_cpu() {
    let samples: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/demo_model/samples.json"
    )))
    .expect("samples.json");
    let s = &samples["samples"][0];
    let text = s["prompt"].as_str().expect("prompt");
    let recorded: Vec<u32> = s["greedy_new_ids"]
        .as_array()
        .expect("greedy_new_ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    let n = recorded.len();

    let gpu_model = TextModel::demo(gpu().await).expect("demo model on WebGPU");
    let cpu_model = TextModel::demo(CpuBackend::new()).expect("demo model on the CPU");
    let prompt = gpu_model.encode(text).expect("encode");
    assert_eq!(cpu_model.encode(text).expect("encode"), prompt);
    // The decode steps below are the fused ones (shaders/decode_step/ under Tint).
    assert!(
        gpu_model.model().uses_fused_decode(1),
        "fused decode step on WebGPU"
    );

    let t0 = checks::now_ms();
    let mut g = browser::AsyncGreedy::new(gpu_model.model(), &prompt, n, true).expect("prefill");
    g.next().await.expect("WebGPU prefill");
    let t1 = checks::now_ms();
    while g.next().await.expect("WebGPU step").is_some() {}
    let on_gpu = g.generated().to_vec();
    let t2 = checks::now_ms();
    log(&format!(
        "demo model on WebGPU: prefill of {} tokens + first id {:.0} ms, {} decode steps \
         {:.0} ms ({:.1} tokens/s)",
        prompt.len(),
        t1 - t0,
        n - 1,
        t2 - t1,
        (n - 1) as f64 * 1e3 / (t2 - t1)
    ));
    let t3 = checks::now_ms();
    let mut g = browser::AsyncGreedy::new(cpu_model.model(), &prompt, n, true).expect("prefill");
    while g.next().await.expect("CPU step").is_some() {}
    let on_cpu = g.generated().to_vec();
    log(&format!(
        "demo model on the CPU backend in wasm: {:.0} ms",
        checks::now_ms() - t3
    ));

    assert_eq!(on_gpu.len(), n);
    assert_eq!(
        on_gpu, on_cpu,
        "greedy ids: WebGPU vs CPU backend for {text:?}"
    );
    assert_eq!(on_cpu, recorded, "greedy ids: CPU backend vs transformers");
    let out = gpu_model.tokenizer().decode(&on_gpu).expect("decode");
    log(&format!(
        "demo model on WebGPU: {n} greedy ids equal the CPU backend's and transformers' \
         {text:?} -> {out:?}"
    ));
}

/// The blocking calls are typed errors in the browser, not hangs.
#[wasm_bindgen_test]
async fn blocking_calls_are_errors_in_the_browser() {
    let e = WgpuBackend::new().expect_err("blocking constructor");
    assert!(
        matches!(e, mamba_gpu::Error::BackendUnavailable { .. }),
        "{e}"
    );
    let be = gpu().await;
    let buf = mamba_gpu::Backend::zeros(&be, DType::F32, &[4]).expect("zeros");
    let e = mamba_gpu::Backend::download(&be, &buf).expect_err("blocking download");
    assert!(e.to_string().contains("download_async"), "{e}");
    let ok = be.download_async(&buf).await.expect("download_async");
    assert_eq!(ok.to_f32(), vec![0.0; 4]);
    assert_close("zeros", &ok.to_f32(), &[0.0; 4], Tol::F32);
}
