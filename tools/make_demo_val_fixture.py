#!/usr/bin/env python3
"""Write tests/fixtures/demo_val/: the demo model's held-out validation tokens and
transformers' loss on them, the reference the q8 quality test holds our loss to.

The held-out split is the one `tools/train_demo_model.py` trained with: the six novels
(from the Debian package r-cran-janeaustenr, decoded by that script's own functions)
encoded by the saved `examples/demo_model/tokenizer.json`, each followed by
<|endoftext|> (id 0), and the last 2 % of the ids (`len // 50`). The fixture keeps the
first `--windows` non-overlapping windows of `--window + 1` ids of that split:

- `ids.u16`: the windows' ids back to back, little-endian u16 (vocab 2048);
- `meta.json`: window length, count, and transformers' `MambaForCausalLM` mean
  next-token cross-entropy (nats/token) over them, each window from a fresh state,
  with the f16 checkpoint upcast to f32 (as transformers runs it on the CPU).

Usage (from the repository root):
    /opt/pyref/bin/python tools/make_demo_val_fixture.py
"""
import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo_model as train  # noqa: E402  (its corpus functions, not its training)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="examples/demo_model")
    ap.add_argument("--out", default="tests/fixtures/demo_val")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "janeausten_corpus"))
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--windows", type=int, default=96)
    args = ap.parse_args()

    from tokenizers import Tokenizer
    from transformers import MambaForCausalLM

    train.check_reference_path()
    os.makedirs(args.workdir, exist_ok=True)
    deb, texts = train.load_corpus(args.workdir)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = []
    for t in texts:
        ids.extend(tok.encode(t).ids)
        ids.append(0)
    n_val = len(ids) // 50
    val = ids[-n_val:]
    w = args.window + 1
    count = min(args.windows, len(val) // w)
    windows = [val[i * w:(i + 1) * w] for i in range(count)]
    print(f"{deb}: {len(ids)} tokens, {n_val} held out, {count} windows of {w}")

    model = MambaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for win in windows:
            x = torch.tensor([win], dtype=torch.long)
            logits = model(x[:, :-1]).logits.double()
            lp = torch.log_softmax(logits, dim=-1)
            nll = -lp[0, torch.arange(args.window), x[0, 1:]]
            total += nll.sum().item()
            n += args.window
    loss = total / n
    print(f"transformers mean NLL {loss:.6f} nats/token over {n} predictions")

    os.makedirs(args.out, exist_ok=True)
    flat = [i for win in windows for i in win]
    assert max(flat) < 65536
    with open(os.path.join(args.out, "ids.u16"), "wb") as f:
        f.write(b"".join(int(i).to_bytes(2, "little") for i in flat))
    meta = {
        "source": f"{deb}, held-out last 2% of tokens (tools/train_demo_model.py split)",
        "window": args.window,
        "windows": count,
        "transformers_nll": loss,
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
