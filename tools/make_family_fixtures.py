#!/usr/bin/env python3
"""Tiny random Falcon-Mamba and Mamba-2 fixtures with reference outputs from transformers.

Writes tests/fixtures/models/<name>/ (config.json, model.safetensors, expected.safetensors)
in the format of tools/make_model_fixtures.py (which makes the Mamba-1 ones), so every
backend's fixture test picks them up. Plus `mamba2_ssm_layout`: the weights of
`mamba2_g1_tied` under the original mamba_ssm config (`ssm_cfg.layer = "Mamba2"`).

References: transformers' pure-PyTorch paths (FalconMambaMixer.slow_forward,
Mamba2Mixer.torch_forward; mamba_ssm / causal_conv1d / the `kernels` hub not installed,
checked), in float32 from the saved weights. Mamba-2's gated norm: transformers <= 4.57
takes the RMS over all channels, which is wrong for n_groups > 1 (transformers PR #40861);
the checkpoints were trained with mamba_ssm's `RMSNormGated`, whose pure-PyTorch
reference `rms_norm_ref` (mamba_ssm/ops/triton/layernorm_gated.py of the sdist, cut out
with `ast` as tools/make_scan_fixtures.py does) replaces `MambaRMSNormGated.forward` here
for every Mamba-2 model (for n_groups = 1 the two agree; the script checks that).

Also tests/fixtures/ssd/: cases for ops::ssd_scan from mamba_ssm's `ssd_minimal_discrete`
(mamba_ssm/modules/ssd_minimal.py, cut out of the sdist) in float64, L at chunk
boundaries and beyond, with and without an initial state; each checked against the
per-step recurrence before it is written.

Usage (from the repository root; needs PyPI for the mamba_ssm sdist):
    /opt/pyref/bin/python tools/make_family_fixtures.py [--out tests/fixtures/models] [--sdist PATH]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
from einops import rearrange

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model_fixtures as mmf  # noqa: E402
import make_scan_fixtures as msf  # noqa: E402

NEW_TOKENS = 16
BATCH_SHAPE = (2, 40)

# name -> (family, config kwargs, options)
MODELS = {
    "falcon_tiny_tied": ("falcon_mamba", dict(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, state_size=16, conv_kernel=4, expand=2,
        use_bias=False, use_conv_bias=True, time_step_rank="auto", mixer_rms_eps=1e-6,
        tie_word_embeddings=True), dict(dtype=torch.float32, seed=11, batch=True, prompts=[5, 64, 700])),
    # expand says 16 but intermediate_size 96 = 2 x 48, as in tiiuae/falcon-mamba-7b's config
    "falcon_untied_bias_bf16": ("falcon_mamba", dict(
        vocab_size=300, hidden_size=48, num_hidden_layers=2, state_size=8, conv_kernel=3, expand=16,
        intermediate_size=96, use_bias=True, use_conv_bias=False, time_step_rank=5, mixer_rms_eps=1e-5,
        tie_word_embeddings=False), dict(dtype=torch.bfloat16, seed=12, prompts=[7, 300])),
    "mamba2_g1_tied": ("mamba2", dict(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, state_size=16, conv_kernel=4, expand=2,
        num_heads=8, head_dim=8, n_groups=1, chunk_size=16, use_bias=False, use_conv_bias=True,
        tie_word_embeddings=True), dict(dtype=torch.float32, seed=21, batch=True, prompts=[5, 16, 17, 300, 1100])),
    "mamba2_g2_untied_bias": ("mamba2", dict(
        vocab_size=300, hidden_size=48, num_hidden_layers=2, state_size=32, conv_kernel=4, expand=2,
        num_heads=6, head_dim=16, n_groups=2, chunk_size=32, use_bias=True, use_conv_bias=True,
        tie_word_embeddings=False), dict(dtype=torch.float32, seed=22, prompts=[3, 32, 200])),
    "mamba2_s128_f16": ("mamba2", dict(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, state_size=128, conv_kernel=4, expand=2,
        num_heads=4, head_dim=16, n_groups=1, chunk_size=64, use_bias=False, use_conv_bias=True,
        tie_word_embeddings=False), dict(dtype=torch.float16, seed=23, prompts=[9, 64, 150])),
}
SSM_LAYOUT = ("mamba2_g1_tied", "mamba2_ssm_layout")


def check_reference_path():
    import importlib.util
    for mod in ("mamba_ssm", "causal_conv1d", "kernels"):
        assert importlib.util.find_spec(mod) is None, f"{mod} must not be installed"
    import transformers.models.falcon_mamba.modeling_falcon_mamba as fm
    import transformers.models.mamba2.modeling_mamba2 as m2
    assert not m2.is_fast_path_available
    assert hasattr(fm.FalconMambaMixer, "slow_forward") and hasattr(m2.Mamba2Mixer, "torch_forward")


def grouped_gated_norm(sdist):
    """MambaRMSNormGated.forward through mamba_ssm's rms_norm_ref with group_size = E / G."""
    src = msf.read_member(sdist, "mamba_ssm/ops/triton/layernorm_gated.py")
    ns = {"torch": torch, "F": F, "rearrange": rearrange}
    exec(msf.function_source(src, "rms_norm_ref"), ns)
    ref = ns["rms_norm_ref"]

    def forward(self, hidden_states, gate=None):
        e = hidden_states.shape[-1]
        return ref(hidden_states, self.weight, None, z=gate, eps=self.variance_epsilon,
                   group_size=e // self.n_groups, norm_before_gate=False)
    return forward


def perturb(model, family, g):
    mmf.perturb(model, g)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if family == "mamba2" and name.endswith("dt_bias"):
                u = torch.rand(p.shape, generator=g)
                dt = torch.exp(torch.log(torch.tensor(0.005)) + u * (torch.log(torch.tensor(0.3)) - torch.log(torch.tensor(0.005))))
                p.copy_(mmf.inv_softplus(dt))
            if family == "mamba2" and name.endswith("mixer.norm.weight"):
                p.copy_(1.0 + 0.25 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def reference(model, prompts, batch):
    out = {}
    for i, ids in enumerate(prompts):
        x = ids[None]
        logits = model(x, use_cache=False).logits[0, -1].float()
        gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, eos_token_id=None,
                             pad_token_id=0)
        new = gen[0, x.shape[1]:]
        assert new[0].item() == int(logits.argmax()), "prefill/forward disagree"
        out[f"prompt_{i}_ids"] = ids.to(torch.int64).contiguous()
        out[f"prompt_{i}_logits"] = logits.contiguous()
        out[f"prompt_{i}_greedy"] = new.to(torch.int64).contiguous()
    if batch is not None:
        logits = model(batch, use_cache=False).logits[:, -1].float()
        gen = model.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, eos_token_id=None,
                             pad_token_id=0)
        out["batch_ids"] = batch.to(torch.int64).contiguous()
        out["batch_logits"] = logits.contiguous()
        out["batch_greedy"] = gen[:, batch.shape[1]:].to(torch.int64).contiguous()
    return out


def ssm_layout(src, dst):
    """The Mamba-2 checkpoint under mamba_ssm's names and config (MambaLMHeadModel + Mamba2)."""
    from safetensors.torch import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    sd = load_file(os.path.join(src, "model.safetensors"))
    out = {("backbone.embedding.weight" if k == "backbone.embeddings.weight" else k): v.clone()
           for k, v in sd.items()}
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["backbone.embedding.weight"].clone()
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    hf = json.load(open(os.path.join(src, "config.json")))
    assert hf["layer_norm_epsilon"] == 1e-5  # mamba_ssm's gated norm epsilon is fixed at 1e-5
    cfg = {
        "d_model": hf["hidden_size"], "d_intermediate": 0, "n_layer": hf["num_hidden_layers"],
        "vocab_size": hf["vocab_size"],
        "ssm_cfg": {"layer": "Mamba2", "d_state": hf["state_size"], "d_conv": hf["conv_kernel"],
                    "expand": hf["expand"], "headdim": hf["head_dim"], "ngroups": hf["n_groups"],
                    "chunk_size": hf["chunk_size"]},
        "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
        "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": hf["tie_word_embeddings"],
    }
    assert hf["vocab_size"] % 16 == 0
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    shutil.copy(os.path.join(src, "expected.safetensors"), os.path.join(dst, "expected.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/models")
    ap.add_argument("--sdist", default=None)
    ap.add_argument("--version", default=msf.DEFAULT_VERSION)
    args = ap.parse_args()
    torch.set_num_threads(2)
    check_reference_path()
    import transformers
    from safetensors.torch import save_file
    from transformers import (FalconMambaConfig, FalconMambaForCausalLM, Mamba2Config, Mamba2ForCausalLM)
    from transformers.models.mamba2 import modeling_mamba2 as m2

    tmp = tempfile.mkdtemp()
    sdist = args.sdist or msf.fetch_sdist(args.version, tmp)
    transformers_norm = m2.MambaRMSNormGated.forward
    grouped = grouped_gated_norm(sdist)

    classes = {"falcon_mamba": (FalconMambaConfig, FalconMambaForCausalLM),
               "mamba2": (Mamba2Config, Mamba2ForCausalLM)}
    for name, (family, kw, opts) in MODELS.items():
        d = os.path.join(args.out, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        cfg_cls, model_cls = classes[family]
        wseed = opts["seed"] * 100
        torch.manual_seed(wseed)
        g = torch.Generator().manual_seed(wseed)
        model = model_cls(cfg_cls(**kw)).eval()
        perturb(model, family, g)
        if kw["tie_word_embeddings"] and model.lm_head.weight is model.backbone.embeddings.weight:
            # Mamba2ForCausalLM (4.57) declares no tied keys, so save_pretrained refuses the
            # shared tensor: store an equal copy (the loader uses the embedding when tied).
            model.lm_head.weight = torch.nn.Parameter(model.backbone.embeddings.weight.detach().clone())
        model.to(opts["dtype"]).save_pretrained(d, safe_serialization=True)
        gc = os.path.join(d, "generation_config.json")
        if os.path.exists(gc):
            os.remove(gc)
        ref = model_cls.from_pretrained(d, torch_dtype=torch.float32).eval()
        gp = torch.Generator().manual_seed(1000 + opts["seed"])
        prompts = [torch.randint(0, kw["vocab_size"], (n,), generator=gp) for n in opts["prompts"]]
        batch = torch.randint(0, kw["vocab_size"], BATCH_SHAPE, generator=gp) if opts.get("batch") else None
        if family == "mamba2":
            for layer in ref.backbone.layers:
                layer.mixer.norm.n_groups = kw["n_groups"]
            m2.MambaRMSNormGated.forward = transformers_norm
            plain = ref(prompts[0][None], use_cache=False).logits[0, -1].float()
            m2.MambaRMSNormGated.forward = grouped
            out = reference(ref, prompts, batch)
            diff = mmf_rel(plain, out["prompt_0_logits"])
            print(f"{name}: transformers' ungrouped norm vs grouped, rel L2 {diff:.3e}")
            assert (diff < 1e-6) == (kw["n_groups"] == 1), diff
        else:
            out = reference(ref, prompts, batch)
        for i in range(len(prompts)):
            print(f"{name} prompt {i} (len {len(prompts[i])}): greedy {out[f'prompt_{i}_greedy'].tolist()}")
        meta = {
            "model": name, "family": family, "transformers_version": transformers.__version__,
            "torch_version": torch.__version__, "reference_dtype": "float32",
            "saved_dtype": str(opts["dtype"]).replace("torch.", ""),
            "reference_path": ("FalconMambaMixer.slow_forward" if family == "falcon_mamba" else
                               "Mamba2Mixer.torch_forward with mamba_ssm rms_norm_ref as the gated norm"),
            "prompt_lengths": ",".join(str(len(p)) for p in prompts),
            "max_new_tokens": str(NEW_TOKENS), "weight_seed": str(wseed),
        }
        save_file(out, os.path.join(d, "expected.safetensors"), metadata=meta)
    m2.MambaRMSNormGated.forward = transformers_norm
    ssd_fixtures(sdist, os.path.join(os.path.dirname(os.path.abspath(args.out)), "ssd"))
    ssm_layout(os.path.join(args.out, SSM_LAYOUT[0]), os.path.join(args.out, SSM_LAYOUT[1]))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, mamba_ssm sdist {sdist}")


# SSD scan cases: (batch, L, heads, head_dim, groups, N, block, D, z, dt_bias, h0)
SSD_CASES = [
    (1, 64, 4, 8, 1, 16, 64, True, True, True, False),     # one whole chunk
    (2, 63, 4, 8, 2, 16, 64, True, False, True, False),    # a chunk minus one
    (1, 65, 6, 4, 3, 8, 64, False, True, True, True),      # a chunk plus one, initial state
    (2, 1, 2, 4, 1, 128, 64, True, True, True, True),      # one decode step, state 128
    (1, 300, 4, 16, 1, 128, 64, True, True, True, True),   # Mamba-2 sizes, several chunks
    (1, 8192, 2, 2, 2, 8, 256, True, False, True, True),   # long
]


def ssd_fixtures(sdist, out_dir):
    """Cases for ops::ssd_scan from mamba_ssm's ssd_minimal_discrete, in float64."""
    from einops import repeat
    from safetensors.torch import save_file
    src = msf.read_member(sdist, "mamba_ssm/modules/ssd_minimal.py")
    ns = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
    for name in ("segsum", "ssd_minimal_discrete"):
        exec(msf.function_source(src, name), ns)
    ssd = ns["ssd_minimal_discrete"]
    os.makedirs(out_dir, exist_ok=True)
    for i, (b, L, H, P, G, N, block, has_d, has_z, has_bias, has_h0) in enumerate(SSD_CASES):
        g = torch.Generator().manual_seed(500 + i)
        rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
        x, dt, Bm, Cm = rn(b, L, H, P), rn(b, L, H) - 1.0, rn(b, L, G, N), rn(b, L, G, N)
        A = -torch.exp(torch.rand(H, generator=g, dtype=torch.float64) * 2.0 - 1.0)
        D, z, bias, h0 = rn(H), rn(b, L, H * P), 0.5 * rn(H), rn(b, H, P, N)
        # round the inputs to f32 first: the op reads f32
        x, dt, Bm, Cm, A, D, z, bias, h0 = [t.float().double() for t in (x, dt, Bm, Cm, A, D, z, bias, h0)]
        dte = F.softplus(dt + (bias if has_bias else 0.0))
        pad = (-L) % block
        padt = lambda t: F.pad(t, [0, 0] * (t.dim() - 2) + [0, pad])  # noqa: E731  (time axis 1)
        Bh = repeat(Bm, "b l g n -> b l (g r) n", r=H // G)
        Ch = repeat(Cm, "b l g n -> b l (g r) n", r=H // G)
        y, last = ssd(padt(x * dte[..., None]), padt(A * dte), padt(Bh), padt(Ch), block,
                      initial_states=h0[:, None] if has_h0 else None)
        y = y[:, :L]
        if has_d:
            y = y + D[:, None] * x
        y = y.reshape(b, L, H * P)
        if has_z:
            y = y * F.silu(z)
        # an independent check of the reference itself: the per-step recurrence
        hs = h0.clone() if has_h0 else torch.zeros(b, H, P, N, dtype=torch.float64)
        for t in range(L):
            hs = torch.exp(A * dte[:, t])[:, :, None, None] * hs + (dte[:, t, :, None, None] * x[:, t, :, :, None]
                                                                    * Bh[:, t, :, None, :])
        assert (hs - last).abs().max() < 1e-9 * max(1.0, last.abs().max().item()), "ssd final state"
        t = dict(x=x.reshape(b, L, H * P), dt=dt, A=A, B=Bm, C=Cm, out=y, last_state=last)
        if has_d:
            t["D"] = D
        if has_z:
            t["z"] = z
        if has_bias:
            t["dt_bias"] = bias
        if has_h0:
            t["h0"] = h0
        name = f"ssd_b{b}_l{L}_h{H}_p{P}_g{G}_n{N}" + ("_h0" if has_h0 else "")
        save_file({k: v.float().contiguous() for k, v in t.items()}, os.path.join(out_dir, f"{name}.safetensors"),
                  metadata={"reference": "mamba_ssm ssd_minimal_discrete (float64), sdist " + os.path.basename(str(sdist)),
                            "block_len": str(block), "head_dim": str(P), "dt_softplus": "1"})
        print(f"ssd fixture {name}: |y| max {y.abs().max().item():.3f}")


def mmf_rel(a, b):
    return ((a - b).norm() / b.norm()).item()


if __name__ == "__main__":
    main()
