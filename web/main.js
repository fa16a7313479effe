// The demo page: loads the wasm module built by tools/serve_web.sh (pkg/), then streams
// greedy text and runs the scan benchmark. `?autorun` generates at once and logs
// "DEMO ..." lines on the console (the CI check reads them, tools/web_page_check.sh).
import init, { load, generate, bench_scan } from "./pkg/web_demo.js";

const $ = (id) => document.getElementById(id);
const autorun = new URLSearchParams(location.search).has("autorun");

async function runGenerate() {
  $("go").disabled = true;
  $("out").textContent = "";
  $("gen-stats").textContent = "prefill…";
  try {
    const max = Number(autorun ? 12 : $("max").value);
    const stats = JSON.parse(await generate($("prompt").value, max, (piece) => {
      $("out").textContent += piece;
      if (autorun) console.log("DEMO PIECE " + JSON.stringify(piece));
    }));
    const pre = stats.prompt_tokens / (stats.prefill_ms / 1e3);
    const dec = stats.decode_steps / (stats.decode_ms / 1e3);
    $("gen-stats").textContent =
      `prefill ${stats.prompt_tokens} tokens in ${stats.prefill_ms.toFixed(0)} ms (${pre.toFixed(1)} tok/s) · ` +
      `decode ${stats.decode_steps} tokens in ${stats.decode_ms.toFixed(0)} ms (${dec.toFixed(1)} tok/s)`;
    if (autorun) console.log("DEMO DONE " + JSON.stringify(stats));
  } catch (e) {
    $("gen-stats").textContent = "error: " + e;
    console.log("DEMO ERROR " + e);
  }
  $("go").disabled = false;
}

async function runBench() {
  $("bench").disabled = true;
  $("bench-stats").textContent = "running…";
  try {
    // The CI check runs a small case: SwiftShader (CPU) takes seconds for the default.
    const [dim, len, n] = autorun ? [64, 1024, 16] : [$("dim").value, $("len").value, $("n").value].map(Number);
    const r = JSON.parse(await bench_scan(dim, len, n, autorun ? 2 : 5));
    $("bench-stats").textContent = `${r.shape}: ${r.ms.toFixed(2)} ms per scan, ${r.gb_per_s.toFixed(2)} GB/s (mean of ${r.runs})`;
    if (autorun) console.log("DEMO BENCH " + JSON.stringify(r));
  } catch (e) {
    $("bench-stats").textContent = "error: " + e;
    console.log("DEMO ERROR " + e);
  }
  $("bench").disabled = false;
}

try {
  await init();
  const info = JSON.parse(await load());
  // wgpu's WebGPU backend leaves the adapter's name empty: ask the browser too.
  const js = await navigator.gpu.requestAdapter();
  const ji = js && js.info ? js.info : {};
  info.gpu_adapter_info = `${ji.vendor || "?"} ${ji.architecture || ""} ${ji.description || ""}${ji.isFallbackAdapter ? " (fallback adapter)" : ""}`.trim();
  $("adapter").textContent = `${info.gpu_adapter_info} via wgpu ${info.adapter}, scan path: ${info.scan_path}`;
  $("model").textContent = `${info.model}, loaded in ${info.load_ms.toFixed(0)} ms`;
  console.log("DEMO LOADED " + JSON.stringify(info));
  $("go").disabled = false;
  $("bench").disabled = false;
  $("go").onclick = runGenerate;
  $("bench").onclick = runBench;
  if (autorun) {
    await runGenerate();
    await runBench();
  }
} catch (e) {
  $("adapter").textContent = "no WebGPU: " + e;
  console.log("DEMO ERROR " + e);
}
