//! The browser demo's wasm module (`web/`): the embedded demo model on WebGPU, greedy
//! text streamed piece by piece, and a selective-scan benchmark. Built for
//! wasm32-unknown-unknown and bound with `wasm-bindgen --target web` by
//! `tools/serve_web.sh`; natively this example is empty.
//!
//! JavaScript calls `load()` once, then `generate(prompt, max_new_tokens, on_piece)` and
//! `bench_scan(dim, len, dstate, runs)`; results come back as JSON strings. The model
//! lives in a thread-local (the page has one thread) so that the exported futures own
//! what they use (`'static`), as wasm-bindgen requires.
#[cfg(target_arch = "wasm32")]
mod web {
    use std::cell::RefCell;
    use std::rc::Rc;

    use mamba_gpu::model::browser::AsyncGreedy;
    use mamba_gpu::ops::{self, Layout, ScanInputs, StateIo};
    use mamba_gpu::wgpu::WgpuBackend;
    use mamba_gpu::{Backend, DType, HostSlice, TextModel};
    use wasm_bindgen::prelude::*;

    thread_local! {
        static MODEL: RefCell<Option<Rc<TextModel<WgpuBackend>>>> = const { RefCell::new(None) };
    }

    fn js_err(e: impl std::fmt::Display) -> JsValue {
        JsValue::from_str(&e.to_string())
    }

    fn now_ms() -> f64 {
        web_sys::window()
            .and_then(|w| w.performance())
            .map_or(0.0, |p| p.now())
    }

    fn model() -> Result<Rc<TextModel<WgpuBackend>>, JsValue> {
        MODEL
            .with(|m| m.borrow().clone())
            .ok_or_else(|| js_err("call load() first"))
    }

    /// Requests the WebGPU adapter and loads the embedded demo model (weights and
    /// tokenizer from bytes inside the wasm module). Returns JSON: adapter, scan path,
    /// load time.
    #[wasm_bindgen]
    pub async fn load() -> Result<String, JsValue> {
        let t0 = now_ms();
        let be = WgpuBackend::new_async().await.map_err(js_err)?;
        let info = be.adapter_info();
        let adapter = format!("{:?} {:?} {}", info.backend, info.device_type, info.name);
        let subgroup = be.uses_subgroup_scan();
        let m = TextModel::demo(be).map_err(js_err)?;
        let cfg = m.model().config();
        let about = format!(
            "{} layers, d_model {}, vocab {}",
            cfg.num_layers, cfg.hidden_size, cfg.vocab_size
        );
        MODEL.with(|slot| *slot.borrow_mut() = Some(Rc::new(m)));
        Ok(serde_json::json!({
            "adapter": adapter.trim(),
            "scan_path": if subgroup { "subgroup" } else { "shared memory" },
            "model": about,
            "load_ms": now_ms() - t0,
        })
        .to_string())
    }

    /// Greedy generation from `prompt`: `on_piece(text)` is called as each piece of text
    /// arrives (the page repaints between tokens: every token awaits its read-back).
    /// Returns JSON: token counts and prefill / decode times.
    #[wasm_bindgen]
    pub async fn generate(
        prompt: String,
        max_new_tokens: usize,
        on_piece: js_sys::Function,
    ) -> Result<String, JsValue> {
        let m = model()?;
        let ids = m.encode(&prompt).map_err(js_err)?;
        let t0 = now_ms();
        let mut g = AsyncGreedy::new(m.model(), &ids, max_new_tokens, false).map_err(js_err)?;
        let mut stream = m.tokenizer().stream();
        let mut first_ms = None;
        let mut text = String::new();
        while let Some(id) = g.next().await.map_err(js_err)? {
            first_ms.get_or_insert_with(now_ms);
            let piece = stream.push(id).map_err(js_err)?;
            if !piece.is_empty() {
                on_piece.call1(&JsValue::NULL, &JsValue::from_str(&piece))?;
                text.push_str(&piece);
            }
        }
        let rest = stream.finish().map_err(js_err)?;
        if !rest.is_empty() {
            on_piece.call1(&JsValue::NULL, &JsValue::from_str(&rest))?;
            text.push_str(&rest);
        }
        let end = now_ms();
        let first = first_ms.unwrap_or(end);
        Ok(serde_json::json!({
            "prompt_tokens": ids.len(),
            "new_tokens": g.generated().len(),
            // Prefill plus the first id (one read-back): the time to the first token.
            "prefill_ms": first - t0,
            "decode_steps": g.generated().len().saturating_sub(1),
            "decode_ms": end - first,
            "text": text,
        })
        .to_string())
    }

    /// `runs` selective scans of (1, dim, len) with dstate `dstate` (time-varying B/C,
    /// D, z, delta_bias, final state), after one warm-up; timed to the read-back of the
    /// small final state. Returns JSON: ms per scan and GB/s of the sequence tensors
    /// read (u, delta, z, B, C) and written (out).
    #[wasm_bindgen]
    pub async fn bench_scan(
        dim: usize,
        len: usize,
        dstate: usize,
        runs: usize,
    ) -> Result<String, JsValue> {
        let m = model()?;
        let be = m.model().backend();
        let f = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * scale)
                .collect()
        };
        let up = |v: Vec<f32>, shape: &[usize]| be.upload(HostSlice::F32(&v), shape);
        let seq = [1, dim, len];
        let bc = [1, dstate, len];
        let u = up(f(dim * len, 2.0), &seq).map_err(js_err)?;
        let delta =
            up(f(dim * len, 0.5).iter().map(|x| x.abs()).collect(), &seq).map_err(js_err)?;
        let z = up(f(dim * len, 2.0), &seq).map_err(js_err)?;
        let a = up(
            f(dim * dstate, 1.0).iter().map(|x| -x.abs()).collect(),
            &[dim, dstate],
        )
        .map_err(js_err)?;
        let b = up(f(dstate * len, 2.0), &bc).map_err(js_err)?;
        let c = up(f(dstate * len, 2.0), &bc).map_err(js_err)?;
        let d = up(f(dim, 1.0), &[dim]).map_err(js_err)?;
        let db = up(f(dim, 0.5).iter().map(|x| x.abs()).collect(), &[dim]).map_err(js_err)?;
        let mut out = be.zeros(DType::F32, &seq).map_err(js_err)?;
        let mut state = be.zeros(DType::F32, &[1, dim, dstate]).map_err(js_err)?;
        let inputs = ScanInputs {
            u: &u,
            delta: &delta,
            a: &a,
            b: &b,
            c: &c,
            d: Some(&d),
            z: Some(&z),
            delta_bias: Some(&db),
            delta_softplus: true,
            layout: Layout::ChannelMajor,
        };
        let scan = |state: &mut _, out: &mut _| {
            ops::selective_scan(be, &inputs, StateIo::Final(state), out).map_err(js_err)
        };
        scan(&mut state, &mut out)?;
        be.download_async(&state).await.map_err(js_err)?;
        let runs = runs.max(1);
        let t0 = now_ms();
        for _ in 0..runs {
            scan(&mut state, &mut out)?;
        }
        be.download_async(&state).await.map_err(js_err)?;
        let ms = (now_ms() - t0) / runs as f64;
        let bytes = ((4 * dim * len + 2 * dstate * len) * 4) as f64;
        Ok(serde_json::json!({
            "shape": format!("batch 1, dim {dim}, L {len}, dstate {dstate}"),
            "ms": ms,
            "gb_per_s": bytes / (ms * 1e-3) / 1e9,
            "runs": runs,
        })
        .to_string())
    }
}
