#!/usr/bin/env python3
"""Train the small demo Mamba model embedded in examples/demo_model/.

Data: Jane Austen's six completed novels (public domain texts), as shipped in
the Debian package `r-cran-janeaustenr` (package license: MIT). The package
stores the novels as R lazy-load data (`data/Rdata.rdb`: zlib-compressed,
XDR-serialized character vectors, one element per printed line); this script
fetches the .deb with `apt-get download`, unpacks it with `dpkg-deb -x` and
decodes the character vectors itself (no R needed).

Then it trains a byte-level BPE tokenizer (`tokenizers`) and a small
`transformers.MambaForCausalLM` on the CPU for a bounded wall-clock time, and
saves model (half precision safetensors) + tokenizer.json + README.md.

Usage (from the repository root):
    /opt/pyref/bin/python tools/train_demo_model.py --minutes 24 --out examples/demo_model

The PyTorch reference path (`MambaMixer.slow_forward`) is required: the script
refuses to run if mamba_ssm / causal_conv1d are importable. For training only, slow_forward's
selective scan is replaced by a fused C kernel (compiled here with gcc -fopenmp, checked against
transformers before training); inference and the saved model use transformers unmodified.
"""
import argparse
import ctypes
import glob
import hashlib
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import torch

EOS = "<|endoftext|>"
DEB = "r-cran-janeaustenr"
NOVELS = [  # order inside Rdata.rdb is alphabetical by object name
    "emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility",
]


# ----------------------------------------------------------------------------- corpus
def fetch_deb(workdir):
    debs = glob.glob(os.path.join(workdir, f"{DEB}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", DEB], cwd=workdir, check=True)
        debs = glob.glob(os.path.join(workdir, f"{DEB}_*.deb"))
    deb = sorted(debs)[-1]
    x = os.path.join(workdir, "x")
    subprocess.run(["dpkg-deb", "-x", deb, x], check=True)
    return os.path.basename(deb), os.path.join(x, "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")


def _r_strsxp(blob):
    """Decode one XDR-serialized R character vector (STRSXP) into a list of str."""
    assert blob[:2] == b"X\n", "not an XDR R serialization"
    version = struct.unpack(">i", blob[2:6])[0]
    p = 14
    if version == 3:
        n = struct.unpack(">i", blob[p:p + 4])[0]
        p += 4 + n
    flags = struct.unpack(">i", blob[p:p + 4])[0]
    p += 4
    assert flags & 0xFF == 16, f"expected STRSXP, got type {flags & 0xFF}"
    n = struct.unpack(">i", blob[p:p + 4])[0]
    p += 4
    out = []
    for _ in range(n):
        cflags, ln = struct.unpack(">ii", blob[p:p + 8])
        p += 8
        assert cflags & 0xFF == 9, "expected CHARSXP"
        if ln < 0:
            out.append("")
            continue
        out.append(blob[p:p + ln].decode("utf-8", errors="replace"))
        p += ln
    return out


def read_rdb(path):
    data = open(path, "rb").read()
    pos, vectors = 0, []
    while pos < len(data):
        d = zlib.decompressobj()
        blob = d.decompress(data[pos + 4:])  # 4-byte big-endian uncompressed length, then zlib
        vectors.append(_r_strsxp(blob))
        pos = len(data) - len(d.unused_data)
    return vectors


def lines_to_text(lines):
    """Printed lines -> paragraphs (one per line of output), blank lines separate paragraphs."""
    paras, cur = [], []
    for ln in lines:
        ln = ln.strip()
        if not ln:
            if cur:
                paras.append(" ".join(cur))
                cur = []
        else:
            cur.append(ln)
    if cur:
        paras.append(" ".join(cur))
    text = "\n".join(paras)
    return text.replace("_", "")  # Gutenberg italics markers


def load_corpus(workdir):
    deb, rdb = fetch_deb(workdir)
    vecs = read_rdb(rdb)
    assert len(vecs) == len(NOVELS), len(vecs)
    return deb, [lines_to_text(v) for v in vecs]


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers, processors

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(EOS) == 0
    return tok


# ----------------------------------------------------------------------------- fused scan (training only)
FASTSCAN_C = r"""
#include <math.h>
#include <string.h>
#include <omp.h>
/* h_t = exp(dt_t*A) h_{t-1} + dt_t*B_t*u_t ; y_t = <C_t, h_t>
   u, dt, y: [Bt,D,L]; A: [D,N]; Bm, Cm: [Bt,L,N]; hs: [Bt,D,L,N] */
void scan_fwd(int Bt, int D, int L, int N, const float* u, const float* dt, const float* A,
              const float* Bm, const float* Cm, float* y, float* hs, int threads) {
  #pragma omp parallel for num_threads(threads) collapse(2) schedule(static)
  for (int b = 0; b < Bt; b++) for (int d = 0; d < D; d++) {
    float h[64]; for (int n = 0; n < N; n++) h[n] = 0.f;
    const float* Ad = A + (long)d*N;
    long base = ((long)b*D + d)*L;
    for (int t = 0; t < L; t++) {
      float dtv = dt[base+t], uv = u[base+t], acc = 0.f;
      const float* Bp = Bm + ((long)b*L + t)*N; const float* Cp = Cm + ((long)b*L + t)*N;
      float* hp = hs + (base + t)*N;
      for (int n = 0; n < N; n++) { h[n] = expf(dtv*Ad[n])*h[n] + dtv*Bp[n]*uv; hp[n] = h[n]; acc += Cp[n]*h[n]; }
      y[base+t] = acc;
    }
  }
}
/* gA_part: [Bt,D,N]; gB, gC: [Bt,L,N] (zeroed by caller) */
void scan_bwd(int Bt, int D, int L, int N, const float* u, const float* dt, const float* A,
              const float* Bm, const float* Cm, const float* hs, const float* gy,
              float* gu, float* gdt, float* gA_part, float* gB, float* gC, int threads) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int b = 0; b < Bt; b++) for (int d = 0; d < D; d++) {
    float gh[64]; for (int n = 0; n < N; n++) gh[n] = 0.f;
    const float* Ad = A + (long)d*N;
    float* gAd = gA_part + ((long)b*D + d)*N;
    long base = ((long)b*D + d)*L;
    for (int t = L-1; t >= 0; t--) {
      float dtv = dt[base+t], uv = u[base+t], g = gy[base+t], gd = 0.f, gux = 0.f;
      const float* Bp = Bm + ((long)b*L + t)*N; const float* Cp = Cm + ((long)b*L + t)*N;
      float* gBp = gB + ((long)b*L + t)*N; float* gCp = gC + ((long)b*L + t)*N;
      const float* hp = hs + (base + t)*N;
      const float* hprev = t > 0 ? hs + (base + t - 1)*N : 0;
      for (int n = 0; n < N; n++) {
        float ghn = gh[n] + Cp[n]*g;
        gCp[n] += g*hp[n];
        float hpv = hprev ? hprev[n] : 0.f;
        float dA = expf(dtv*Ad[n]);
        float gdA = ghn*hpv*dA;
        gd += gdA*Ad[n] + ghn*Bp[n]*uv;
        gAd[n] += gdA*dtv;
        gBp[n] += ghn*dtv*uv;
        gux += ghn*dtv*Bp[n];
        gh[n] = ghn*dA;
      }
      gdt[base+t] = gd; gu[base+t] = gux;
    }
  }
}
"""

_lib = None

def _load():
    global _lib
    if _lib is None:
        h = hashlib.sha1(FASTSCAN_C.encode()).hexdigest()[:12]
        d = os.path.join(tempfile.gettempdir(), f"mamba_fastscan_{h}")
        os.makedirs(d, exist_ok=True)
        so = os.path.join(d, "fastscan.so")
        if not os.path.exists(so):
            src = os.path.join(d, "fastscan.c")
            open(src, "w").write(FASTSCAN_C)
            subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", src, "-o", so + ".tmp", "-lm"], check=True)
            os.replace(so + ".tmp", so)
        _lib = ctypes.CDLL(so)
    return _lib

def _p(t):
    assert t.dtype == torch.float32 and t.is_contiguous()
    return ctypes.c_void_p(t.data_ptr())

class FastScan(torch.autograd.Function):
    threads = 2
    calls = 0

    @staticmethod
    def forward(ctx, u, dt, A, Bm, Cm):
        u, dt, A, Bm, Cm = [x.float().contiguous() for x in (u, dt, A, Bm, Cm)]
        Bt, D, L = u.shape; N = A.shape[1]
        assert N <= 64
        y = torch.empty_like(u); hs = torch.empty(Bt, D, L, N)
        _load().scan_fwd(Bt, D, L, N, _p(u), _p(dt), _p(A), _p(Bm), _p(Cm), _p(y), _p(hs), FastScan.threads)
        ctx.save_for_backward(u, dt, A, Bm, Cm, hs)
        return y

    @staticmethod
    def backward(ctx, gy):
        u, dt, A, Bm, Cm, hs = ctx.saved_tensors
        gy = gy.float().contiguous()
        Bt, D, L = u.shape; N = A.shape[1]
        gu = torch.empty_like(u); gdt = torch.empty_like(dt)
        gAp = torch.zeros(Bt, D, N); gB = torch.zeros_like(Bm); gC = torch.zeros_like(Cm)
        _load().scan_bwd(Bt, D, L, N, _p(u), _p(dt), _p(A), _p(Bm), _p(Cm), _p(hs), _p(gy),
                         _p(gu), _p(gdt), _p(gAp), _p(gB), _p(gC), FastScan.threads)
        return gu, gdt, gAp.sum(0), gB, gC

def _ref_scan(u, dt, A, Bm, Cm):
    Bt, D, L = u.shape
    h = torch.zeros(Bt, D, A.shape[1]); ys = []
    for t in range(L):
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * Bm[:, None, t] * u[:, :, t, None]
        ys.append((h * Cm[:, None, t]).sum(-1))
    return torch.stack(ys, -1)


def fast_train_slow_forward(orig):
    """Wrap MambaMixer.slow_forward: in training mode without a cache, run the same computation
    as transformers' slow_forward but with the fused C selective scan above (the sequential
    PyTorch loop's backward is O(L^2) and far too slow on 2 CPU cores). Inference (eval mode,
    generation, the saved model) always uses the unmodified transformers code."""
    import torch.nn.functional as F

    def fwd(self, input_states, cache_params=None, cache_position=None, attention_mask=None):
        if not (self.training and cache_params is None and attention_mask is None):
            return orig(self, input_states, cache_params, cache_position, attention_mask)
        seq_len = input_states.shape[1]
        projected_states = self.in_proj(input_states).transpose(1, 2)
        hidden_states, gate = projected_states.chunk(2, dim=1)
        hidden_states = self.act(self.conv1d(hidden_states)[..., :seq_len])
        ssm_parameters = self.x_proj(hidden_states.transpose(1, 2))
        time_step, B, C = torch.split(
            ssm_parameters, [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        discrete_time_step = F.softplus(self.dt_proj(time_step)).transpose(1, 2)
        A = -torch.exp(self.A_log.float())
        FastScan.calls += 1
        scan_output = FastScan.apply(hidden_states, discrete_time_step, A, B, C)
        scan_output = scan_output + hidden_states * self.D[None, :, None]
        scan_output = scan_output * self.act(gate)
        return self.out_proj(scan_output.transpose(1, 2))
    return fwd


def install_fast_scan(model):
    """Patch the training forward and check it against the untouched transformers path."""
    import transformers.models.mamba.modeling_mamba as mm
    torch.manual_seed(123)
    x = torch.randint(0, model.config.vocab_size, (2, 40))
    model.eval()
    with torch.no_grad():
        ref = model(x).logits
    orig = mm.MambaMixer.slow_forward
    mm.MambaMixer.slow_forward = fast_train_slow_forward(orig)
    model.train()
    out = model(x).logits.detach()
    assert FastScan.calls == model.config.num_hidden_layers, "fast scan not used"
    err = (out - ref).abs().max().item()
    print(f"fast scan vs transformers slow_forward: max |dlogits| = {err:.2e}", flush=True)
    assert err < 1e-3, err
    xs = [torch.randn(2, 6, 9), torch.rand(2, 6, 9) * 0.5, -torch.rand(6, 4) * 3, torch.randn(2, 9, 4), torch.randn(2, 9, 4)]
    xs = [t.requires_grad_() for t in xs]
    gy = torch.randn(2, 6, 9)
    g1 = torch.autograd.grad(FastScan.apply(*xs), xs, gy)
    g2 = torch.autograd.grad(_ref_scan(*xs), xs, gy)
    gerr = max((a - b).abs().max().item() for a, b in zip(g1, g2))
    print(f"fast scan gradient check: max err {gerr:.2e}", flush=True)
    assert gerr < 1e-4, gerr


# ----------------------------------------------------------------------------- training
def check_reference_path():
    import transformers.models.mamba.modeling_mamba as mm
    from transformers.utils import import_utils as iu

    assert not iu.is_mamba_ssm_available(), "mamba_ssm must not be installed (need the PyTorch slow_forward path)"
    assert not iu.is_causal_conv1d_available(), "causal_conv1d must not be installed"
    assert getattr(mm, "selective_scan_fn", None) is None
    assert hasattr(mm.MambaMixer, "slow_forward")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="examples/demo_model")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "janeausten_corpus"))
    ap.add_argument("--minutes", type=float, default=24.0, help="wall-clock training budget")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench", type=int, default=0, help="only time N training steps")
    ap.add_argument("--samples-only", action="store_true", help="only (re)write samples.json from --out")
    ap.add_argument("--slow-scan", action="store_true",
                    help="train with transformers' own sequential scan (very slow backward)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    check_reference_path()
    if args.samples_only:
        write_samples(args.out)
        return
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    os.makedirs(args.workdir, exist_ok=True)
    deb, texts = load_corpus(args.workdir)
    print(f"corpus: {deb}: {len(texts)} novels, {sum(map(len, texts))} chars", flush=True)

    tok = train_tokenizer(texts, args.vocab)
    vocab = tok.get_vocab_size()
    ids = []
    for t in texts:
        ids.extend(tok.encode(t).ids)
        ids.append(0)
    data = torch.tensor(ids, dtype=torch.long)
    n_val = len(data) // 50
    train, val = data[:-n_val], data[-n_val:]
    print(f"tokens: {len(data)} (train {len(train)}, val {len(val)}), vocab {vocab}", flush=True)

    cfg = MambaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        state_size=args.state,
        num_hidden_layers=args.layers,
        expand=2,
        conv_kernel=4,
        use_bias=False,
        use_conv_bias=True,
        time_step_rank="auto",
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        residual_in_fp32=True,
    )
    model = MambaForCausalLM(cfg)
    if not args.slow_scan:
        FastScan.threads = args.threads
        install_fast_scan(model)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"params: {nparam}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98),
    )

    def batch(src, bs):
        ix = torch.randint(0, len(src) - args.seq - 1, (bs,))
        return torch.stack([src[i:i + args.seq + 1] for i in ix])

    @torch.no_grad()
    def evaluate(n=4):
        model.eval()
        g = torch.Generator().manual_seed(1234)
        losses = []
        for _ in range(n):
            ix = torch.randint(0, len(val) - args.seq - 1, (args.batch,), generator=g)
            xb = torch.stack([val[i:i + args.seq + 1] for i in ix])
            losses.append(model(xb[:, :-1], labels=xb[:, :-1]).loss.item())
        model.train()
        return sum(losses) / len(losses)

    budget = args.minutes * 60.0
    warmup = 30
    model.train()
    t0 = time.time()
    step, ema, recent = 0, None, []
    while True:
        el = time.time() - t0
        if args.bench and step >= args.bench:
            print(f"bench: {el / step:.3f} s/step", flush=True)
            return
        if el >= budget:
            break
        frac = el / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        xb = batch(train, args.batch)
        # labels are shifted inside MambaForCausalLM
        loss = model(xb, labels=xb).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        recent = (recent + [loss.item()])[-25:]
        if step % 25 == 0 or args.bench:
            print(f"step {step} t={el:.0f}s lr={lr:.2e} loss={loss.item():.3f} ema={ema:.3f}", flush=True)
        if step % 100 == 0:
            print(f"  val loss {evaluate():.3f}", flush=True)
    train_time = time.time() - t0
    val_loss = evaluate(8)
    print(f"done: {step} steps in {train_time:.0f}s, train loss (ema) {ema:.3f}, val loss {val_loss:.3f}", flush=True)

    # ------------------------------------------------------------------ save
    os.makedirs(args.out, exist_ok=True)
    model.eval()
    save_dtype = torch.float16
    half = MambaForCausalLM(cfg)
    half.load_state_dict(model.state_dict())
    half = half.to(save_dtype)
    half.save_pretrained(args.out, safe_serialization=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    for extra in ("generation_config.json",):
        p = os.path.join(args.out, extra)
        if os.path.exists(p):
            os.remove(p)

    samples = write_samples(args.out, tok)

    sizes = {f: os.path.getsize(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out))}
    info = dict(
        deb=deb, chars=sum(map(len, texts)), tokens=len(data), vocab=vocab, params=nparam, steps=step,
        train_time_s=round(train_time), train_loss_ema=round(ema, 3),
        train_loss_last25=round(sum(recent) / len(recent), 3), val_loss=round(val_loss, 3),
        batch=args.batch, seq=args.seq, lr=args.lr, threads=args.threads,
        transformers=transformers.__version__, torch=torch.__version__, sizes=sizes,
    )
    print(json.dumps(info, indent=1), flush=True)
    write_readme(args, cfg, info, samples)


SAMPLE_PROMPTS = ["It is a truth universally acknowledged", "\"My dear Mr. Bennet,\" said", "Emma was"]


def write_samples(out_dir, tok=None):
    """Greedy and sampled continuations from the saved (half) weights run in f32 with transformers.
    Also writes samples.json (prompt ids + greedy ids) for end-to-end tests of other implementations."""
    from tokenizers import Tokenizer
    from transformers import MambaForCausalLM

    if tok is None:
        tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    reloaded = MambaForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float32).eval()
    samples, records = [], []
    torch.manual_seed(42)
    with torch.no_grad():
        for p in SAMPLE_PROMPTS:
            x = torch.tensor([tok.encode(p).ids])
            greedy = reloaded.generate(x, max_new_tokens=48, do_sample=False, use_cache=True,
                                       eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(x))
            sampled = reloaded.generate(x, max_new_tokens=48, do_sample=True, temperature=0.8, top_k=40,
                                        use_cache=True, pad_token_id=0, attention_mask=torch.ones_like(x))
            gs = tok.decode(greedy[0].tolist())
            ss = tok.decode(sampled[0].tolist())
            print(f"\nPROMPT {p!r}\n  greedy : {gs!r}\n  sampled: {ss!r}", flush=True)
            samples.append((p, gs, ss))
            last_logits = reloaded(x, use_cache=False).logits[0, -1]
            records.append(dict(prompt=p, prompt_ids=x[0].tolist(), greedy_new_ids=greedy[0, x.shape[1]:].tolist(),
                                greedy_text=gs, last_logits_top5=[
                                    [int(i), round(float(v), 4)] for v, i in zip(*last_logits.topk(5))]))
    with open(os.path.join(out_dir, "samples.json"), "w") as f:
        json.dump(dict(note="greedy: generate(do_sample=False, use_cache=True, eos ignored), 48 new tokens, "
                            "f16 weights upcast to f32, transformers slow_forward; last_logits_top5: [id, logit] "
                            "at the last prompt position", samples=records), f, indent=1)
        f.write("\n")
    return samples


def write_readme(args, cfg, info, samples):
    cmd = (f"/opt/pyref/bin/python tools/train_demo_model.py --minutes {args.minutes:g} --out {args.out}"
           f" --vocab {args.vocab} --hidden {args.hidden} --layers {args.layers} --state {args.state}"
           f" --seq {args.seq} --batch {args.batch} --lr {args.lr:g} --threads {args.threads} --seed {args.seed}")
    lines = [
        "# Demo model: a tiny Mamba trained on Jane Austen",
        "",
        "A small `MambaForCausalLM` (Hugging Face layout) plus its byte-level BPE `tokenizer.json`,",
        "small enough to ship in the repository, for examples and end-to-end tests. It writes",
        "Austen-flavoured English (real words and punctuation, little sense).",
        "",
        "## Data and license",
        "",
        "- Text: Jane Austen's six completed novels (Emma, Mansfield Park, Northanger Abbey, Persuasion,",
        "  Pride and Prejudice, Sense and Sensibility). The novels themselves are in the public domain.",
        f"- Source: the Debian package `{DEB}` (file `{info['deb']}`, the CRAN package `janeaustenr`",
        "  by Julia Silge, which took the texts from Project Gutenberg). Package license: MIT.",
        "  The script decodes the package's R data file `data/Rdata.rdb` itself; 2% of the tokens",
        "  (the end of the last novel) are held out for validation.",
        "- The model weights and tokenizer here are derived from those public-domain texts.",
        "",
        "## Files",
        "",
        "| file | bytes |",
        "| --- | --- |",
    ]
    lines += [f"| `{f}` | {s} |" for f, s in info["sizes"].items() if f != "README.md"]
    lines += [
        "",
        "`samples.json` holds, for the three prompts below, the prompt token ids, the 48 greedy token ids",
        "and the top-5 last-position logits from transformers (f16 weights upcast to f32), for end-to-end",
        "tests; `--samples-only` rewrites it from the saved model.",
        "",
        "Use with transformers:",
        "",
        "```python",
        "from transformers import MambaForCausalLM, PreTrainedTokenizerFast",
        f"tok = PreTrainedTokenizerFast(tokenizer_file=\"{args.out}/tokenizer.json\", eos_token=\"{EOS}\")",
        f"model = MambaForCausalLM.from_pretrained(\"{args.out}\", torch_dtype=\"float32\")",
        "ids = tok(\"Emma was\", return_tensors=\"pt\").input_ids",
        "print(tok.decode(model.generate(ids, max_new_tokens=48, do_sample=True, top_k=40)[0]))",
        "```",
        "",
        "## Model",
        "",
        f"- `MambaForCausalLM`, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, state {cfg.state_size},",
        f"  expand {cfg.expand}, conv kernel {cfg.conv_kernel}, dt rank {cfg.time_step_rank}, vocab {cfg.vocab_size},",
        f"  tied embeddings, {info['params']} parameters, saved as float16 safetensors",
        "  (`\"dtype\": \"float16\"` in config.json, as transformers 4.57 writes it; a loader must convert to f32).",
        f"- Tokenizer: byte-level BPE (HF `tokenizers`), vocab {info['vocab']}, `{EOS}` = id 0, which is",
        "  also `bos_token_id`, `eos_token_id` and `pad_token_id` in config.json. No BOS is prepended",
        "  when encoding; the training stream is the novels joined with `<|endoftext|>`, paragraphs",
        "  separated by `\\n`.",
        "",
        "## Training",
        "",
        f"- {info['steps']} AdamW steps (lr {info['lr']:g}, cosine to 10%, weight decay 0.1, grad clip 1.0),",
        f"  batch {info['batch']} x {info['seq']} tokens, {info['train_time_s']} s wall on CPU with"
        f" {info['threads']} torch threads,",
        f"  transformers {info['transformers']}, torch {info['torch']}.",
        "- The model is transformers' `MambaForCausalLM`; for training only, its `MambaMixer.slow_forward`",
        "  is wrapped so the selective scan runs in a small fused C kernel (compiled by the script with",
        "  gcc/OpenMP, forward + hand-written backward): the PyTorch loop's backward is far too slow on",
        "  2 cores. The script checks it against the unmodified transformers forward (max |dlogits| ~5e-6)",
        "  and against autograd of a reference scan before training. Inference, the samples below and",
        "  the saved model use transformers unmodified.",
        f"- Corpus: {info['chars']} characters -> {info['tokens']} tokens.",
        f"- Final loss: validation **{info['val_loss']}** nats/token (held-out 2%), mean training loss of the last"
        f" 25 steps {info['train_loss_last25']} (EMA {info['train_loss_ema']}, which lags).",
        "",
        "Regenerate (needs `apt-get`/`dpkg-deb` and the packages in `tools/requirements.txt`):",
        "",
        "```",
        cmd,
        "```",
        "",
        "Training is time-bounded, so results vary a little from run to run and machine to machine.",
        "",
        "## Samples",
        "",
        "From the saved float16 weights run in float32 with transformers; 48 new tokens each.",
        "Greedy (`do_sample=False`) and sampled (`temperature=0.8, top_k=40`, torch seed 42):",
        "",
    ]
    for p, gs, ss in samples:
        lines += [f"Prompt: `{p}`", "", "- greedy:", "", "  ```", "  " + gs.replace("\n", "\n  "), "  ```",
                  "- sampled:", "", "  ```", "  " + ss.replace("\n", "\n  "), "  ```", ""]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
