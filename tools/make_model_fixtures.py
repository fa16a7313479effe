#!/usr/bin/env python3
"""Generate tiny random Mamba model fixtures with reference outputs from transformers.

For every model in MODELS this writes tests/fixtures/models/<name>/:
  config.json, model.safetensors   -- MambaForCausalLM.save_pretrained(safe_serialization=True)
  expected.safetensors             -- reference ids / last-position logits / greedy tokens
plus tests/fixtures/models/ssm_layout/ (the same weights as `tiny_tied` under the original
state-spaces/mamba names and config keys, with the same expected.safetensors).

The reference runs use transformers' pure-PyTorch path (MambaMixer.slow_forward) in float32
(`torch_dtype=torch.float32` on reload, so half-precision checkpoints are upcast exactly the
way a loader has to). The script refuses to run when mamba_ssm / causal_conv1d are importable.

Usage (from the repository root):
    /opt/pyref/bin/python tools/make_model_fixtures.py [--out tests/fixtures/models]
"""
import argparse
import json
import math
import os
import shutil

import torch

PROMPT_LENS = [5, 300, 2100]
NEW_TOKENS = [32, 32, 16]
BATCH_SHAPE = (2, 64)  # optional batched case, only for models with batch=True
BATCH_NEW = 32

# name -> (MambaConfig kwargs, options)
MODELS = {
    "tiny_tied": (
        dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, state_size=16, conv_kernel=4,
             expand=2, use_bias=False, use_conv_bias=True, time_step_rank="auto",
             tie_word_embeddings=True),
        dict(dtype=torch.float32, seed=1, batch=True, rank_auto_in_json=True),
    ),
    "untied_bias_v389": (
        dict(vocab_size=389, hidden_size=48, num_hidden_layers=3, state_size=4, conv_kernel=3,
             expand=2, use_bias=True, use_conv_bias=False, time_step_rank=5,
             tie_word_embeddings=False),
        dict(dtype=torch.float32, seed=2),
    ),
    "f16_rank8": (
        dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, state_size=16, conv_kernel=4,
             expand=2, use_bias=False, use_conv_bias=True, time_step_rank=8,
             tie_word_embeddings=True),
        dict(dtype=torch.float16, seed=3, legacy_torch_dtype_key=True),
    ),
    "bf16_untied_s8": (
        dict(vocab_size=300, hidden_size=40, num_hidden_layers=2, state_size=8, conv_kernel=4,
             expand=2, use_bias=True, use_conv_bias=True, time_step_rank="auto",
             tie_word_embeddings=False),
        dict(dtype=torch.bfloat16, seed=4),
    ),
}
SSM_LAYOUT_BASE = "tiny_tied"


def check_reference_path():
    import importlib.util
    import transformers.models.mamba.modeling_mamba as mm
    from transformers.utils import import_utils as iu

    assert importlib.util.find_spec("mamba_ssm") is None, "mamba_ssm must not be installed"
    assert not iu.is_mamba_ssm_available() and not iu.is_causal_conv1d_available()
    # transformers 4.x computes `is_fast_path_available` inside MambaMixer.forward from these:
    assert mm.selective_scan_fn is None and mm.selective_state_update is None and mm.mamba_inner_fn is None
    assert hasattr(mm.MambaMixer, "slow_forward")


def inv_softplus(x):
    return x + torch.log(-torch.expm1(-x))


@torch.no_grad()
def perturb(model, g):
    """Move every tensor away from its init so the model is not near-trivial."""
    for name, p in model.named_parameters():
        n = lambda: torch.randn(p.shape, generator=g)  # noqa: E731
        u = lambda: torch.rand(p.shape, generator=g)  # noqa: E731
        if name.endswith("A_log"):
            # A = -exp(A_log) in about [-12, -0.3]: a spread of fast and slow decays
            p.copy_(torch.log(0.3 + 12.0 * u() ** 2))
        elif name.endswith("dt_proj.bias"):
            # softplus(bias) = base step size, log-uniform in [0.005, 0.3]
            dt = torch.exp(math.log(0.005) + u() * (math.log(0.3) - math.log(0.005)))
            p.copy_(inv_softplus(dt))
        elif name.endswith(".D"):
            p.copy_(1.0 + 0.5 * n())
        elif name == "backbone.norm_f.weight":
            # mixed signs: with tied embeddings this stops each token from simply predicting itself
            p.copy_(1.5 * n())
        elif "norm" in name:
            p.copy_(1.0 + 0.25 * n())
        elif p.dim() == 1:  # remaining biases
            p.copy_(0.2 * n())
        elif "out_proj" in name:
            # let the mixers, not the token embedding, dominate the residual stream
            p.copy_(p * 2.0 + 2.0 * max(p.std().item(), 0.05) * n())
        else:
            scale = 0.6 * max(p.std().item(), 0.05)
            p.add_(scale * n())
    # embedding rows with a little more spread, so tokens are distinguishable
    model.backbone.embeddings.weight.mul_(2.0)


def make_prompts(vocab, g):
    return [torch.randint(0, vocab, (L,), generator=g) for L in PROMPT_LENS]


@torch.no_grad()
def reference(model, ids_list, batch=None):
    out = {}
    for i, (ids, n_new) in enumerate(zip(ids_list, NEW_TOKENS)):
        x = ids[None]
        logits = model(x, use_cache=False).logits[0, -1].float()
        # An explicit all-ones mask: without it transformers derives one from pad_token_id
        # and silently zeroes every prompt position that holds token 0.
        gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n_new, min_new_tokens=n_new,
                             do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0)
        new = gen[0, x.shape[1]:]
        assert new.shape[0] == n_new, (new.shape, n_new)
        # greedy's first token must be the argmax of the single-forward logits
        assert new[0].item() == int(logits.argmax()), "prefill/forward disagree"
        out[f"prompt_{i}_ids"] = ids.to(torch.int64).contiguous()
        out[f"prompt_{i}_logits"] = logits.contiguous()
        out[f"prompt_{i}_greedy"] = new.to(torch.int64).contiguous()
    if batch is not None:
        logits = model(batch, use_cache=False).logits[:, -1].float()
        gen = model.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=BATCH_NEW,
                             min_new_tokens=BATCH_NEW, do_sample=False, use_cache=True, eos_token_id=None,
                             pad_token_id=0)
        out["batch_ids"] = batch.to(torch.int64).contiguous()
        out["batch_logits"] = logits.contiguous()
        out["batch_greedy"] = gen[:, batch.shape[1]:].to(torch.int64).contiguous()
    return out


@torch.no_grad()
def check_greedy_without_cache(model, ids, greedy):
    """The cached generate() tokens must equal argmax of full (uncached) forwards."""
    seq = ids.tolist()
    for tok in greedy.tolist():
        nxt = int(model(torch.tensor([seq]), use_cache=False).logits[0, -1].argmax())
        assert nxt == tok, "cached greedy differs from uncached argmax"
        seq.append(tok)


@torch.no_grad()
def check_ssm_layout(dst_dir):
    """Map the original names back, load into MambaForCausalLM and compare with expected."""
    from safetensors.torch import load_file
    from transformers import MambaConfig, MambaForCausalLM

    c = json.load(open(os.path.join(dst_dir, "config.json")))
    s = c["ssm_cfg"]
    cfg = MambaConfig(vocab_size=c["vocab_size"], hidden_size=c["d_model"], num_hidden_layers=c["n_layer"],
                      state_size=s["d_state"], conv_kernel=s["d_conv"], expand=s["expand"],
                      time_step_rank=s["dt_rank"], use_conv_bias=s["conv_bias"], use_bias=s["bias"],
                      tie_word_embeddings=c["tie_embeddings"])
    sd = load_file(os.path.join(dst_dir, "model.safetensors"))
    sd["backbone.embeddings.weight"] = sd.pop("backbone.embedding.weight")
    model = MambaForCausalLM(cfg).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    exp = load_file(os.path.join(dst_dir, "expected.safetensors"))
    for i in range(len(PROMPT_LENS)):
        got = model(exp[f"prompt_{i}_ids"][None], use_cache=False).logits[0, -1]
        err = (got - exp[f"prompt_{i}_logits"]).abs().max().item()
        assert err < 1e-4, (i, err)


def describe(cfg_kwargs, opts):
    d = dict(cfg_kwargs)
    d["saved_dtype"] = str(opts["dtype"]).replace("torch.", "")
    return d


def ssm_layout(src_dir, dst_dir, hf_cfg):
    """Re-save an HF Mamba checkpoint under the original state-spaces/mamba names and config."""
    from safetensors.torch import load_file, save_file

    os.makedirs(dst_dir, exist_ok=True)
    sd = load_file(os.path.join(src_dir, "model.safetensors"))
    out = {}
    for k, v in sd.items():
        if k == "backbone.embeddings.weight":
            out["backbone.embedding.weight"] = v.clone()
        else:
            assert k.startswith("backbone.layers.") or k in ("backbone.norm_f.weight", "lm_head.weight"), k
            out[k] = v.clone()
    if "lm_head.weight" not in out:  # tied: the original checkpoints store lm_head.weight too
        out["lm_head.weight"] = out["backbone.embedding.weight"].clone()
    save_file(out, os.path.join(dst_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "d_model": hf_cfg["hidden_size"],
        "n_layer": hf_cfg["num_hidden_layers"],
        "vocab_size": hf_cfg["vocab_size"],
        "ssm_cfg": {
            "d_state": hf_cfg["state_size"],
            "d_conv": hf_cfg["conv_kernel"],
            "expand": hf_cfg["expand"],
            "dt_rank": "auto",
            "conv_bias": hf_cfg["use_conv_bias"],
            "bias": hf_cfg["use_bias"],
        },
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": bool(hf_cfg.get("tie_word_embeddings", True)),
    }
    assert hf_cfg["vocab_size"] % cfg["pad_vocab_size_multiple"] == 0
    with open(os.path.join(dst_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    shutil.copy(os.path.join(src_dir, "expected.safetensors"), os.path.join(dst_dir, "expected.safetensors"))
    return sorted(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/models")
    args = ap.parse_args()

    torch.set_num_threads(2)
    check_reference_path()
    import transformers
    from safetensors.torch import load_file, save_file
    from transformers import MambaConfig, MambaForCausalLM

    summary = {}
    for name, (cfg_kwargs, opts) in MODELS.items():
        d = os.path.join(args.out, name)
        # retry with the next weight seed until every greedy continuation has several distinct tokens
        for attempt in range(8):
            wseed = opts["seed"] * 100 + attempt
            if os.path.isdir(d):
                shutil.rmtree(d)
            os.makedirs(d)
            torch.manual_seed(wseed)
            g = torch.Generator().manual_seed(wseed)
            cfg = MambaConfig(**cfg_kwargs)
            model = MambaForCausalLM(cfg).eval()
            perturb(model, g)
            model.to(opts["dtype"]).save_pretrained(d, safe_serialization=True)
            gc_path = os.path.join(d, "generation_config.json")
            if os.path.exists(gc_path):
                os.remove(gc_path)
            cfg_path = os.path.join(d, "config.json")
            saved_cfg = json.load(open(cfg_path))
            if opts.get("rank_auto_in_json"):
                # MambaConfig resolves "auto" to ceil(hidden/16) before saving; write the literal "auto"
                # back so loaders are exercised on it (transformers accepts it on load).
                assert saved_cfg["time_step_rank"] == math.ceil(cfg_kwargs["hidden_size"] / 16)
                saved_cfg["time_step_rank"] = "auto"
                with open(cfg_path, "w") as f:
                    json.dump(saved_cfg, f, indent=2, sort_keys=True)
                    f.write("\n")

            if opts.get("legacy_torch_dtype_key"):
                # transformers >= 4.56 writes "dtype"; older checkpoints (e.g. the state-spaces/*-hf ones)
                # have "torch_dtype". Keep one fixture in the older spelling.
                saved_cfg = json.load(open(cfg_path))
                saved_cfg["torch_dtype"] = saved_cfg.pop("dtype")
                with open(cfg_path, "w") as f:
                    json.dump(saved_cfg, f, indent=2, sort_keys=True)
                    f.write("\n")

            # reference from what is on disk, upcast to f32
            ref = MambaForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
            assert not ref.config.use_mambapy
            keys = sorted(load_file(os.path.join(d, "model.safetensors")))
            gp = torch.Generator().manual_seed(1000 + opts["seed"])
            prompts = make_prompts(cfg.vocab_size, gp)
            batch = torch.randint(0, cfg.vocab_size, BATCH_SHAPE, generator=gp) if opts.get("batch") else None
            out = reference(ref, prompts, batch)
            ok = True
            for i in range(len(PROMPT_LENS)):
                gtoks = out[f"prompt_{i}_greedy"].tolist()
                distinct = len(set(gtoks))
                print(f"{name} (weight seed {wseed}) prompt {i} (len {PROMPT_LENS[i]}): greedy {gtoks} distinct={distinct}",
                      flush=True)
                ok &= distinct >= (6 if len(gtoks) >= 32 else 5)
            if ok:
                break
        else:
            raise SystemExit(f"{name}: greedy output too repetitive for every weight seed tried")
        check_greedy_without_cache(ref, out["prompt_0_ids"], out["prompt_0_greedy"])
        meta = {
            "model": name,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "reference_dtype": "float32",
            "saved_dtype": str(opts["dtype"]).replace("torch.", ""),
            "reference_path": "MambaMixer.slow_forward (no mamba_ssm / causal_conv1d)",
            "prompt_lengths": ",".join(map(str, PROMPT_LENS)),
            "max_new_tokens": ",".join(map(str, NEW_TOKENS)),
            "logits": "last position of one forward over the whole prompt (use_cache=False)",
            "greedy": "generate(do_sample=False, use_cache=True, eos_token_id=None, min_new_tokens=max_new_tokens): "
                      "new tokens only, never stopped early by eos",
            "prompt_seed": str(1000 + opts["seed"]),
            "weight_seed": str(wseed),
        }
        if batch is not None:
            meta["batch_shape"] = "x".join(map(str, BATCH_SHAPE))
            meta["batch_max_new_tokens"] = str(BATCH_NEW)
        save_file(out, os.path.join(d, "expected.safetensors"), metadata=meta)
        summary[name] = dict(config=describe(cfg_kwargs, opts), tensors=keys,
                             time_step_rank=ref.config.time_step_rank)

    base = os.path.join(args.out, SSM_LAYOUT_BASE)
    names = ssm_layout(base, os.path.join(args.out, "ssm_layout"), json.load(open(os.path.join(base, "config.json"))))
    check_ssm_layout(os.path.join(args.out, "ssm_layout"))
    summary["ssm_layout"] = dict(base=SSM_LAYOUT_BASE, tensors=names)

    total = 0
    for root, _, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(json.dumps(summary, indent=1))
    print(f"total size of {args.out}: {total} bytes")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
