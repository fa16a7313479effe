#!/usr/bin/env python3
"""Helper of tools/llama_cpp_peer.sh (standard library only, except `types`).

  llama_cpp_peer.py prompt OURS.json            the decode prompt ids, space-separated
  llama_cpp_peer.py types GGUF...               tensor types per file (needs gguf-py)
  llama_cpp_peer.py greedy N OURS.json LABEL=IDS_FILE...   greedy-ids agreement table
  llama_cpp_peer.py table RUN_DIR ROUNDS        the throughput table of the rounds
"""

import json
import statistics
import sys
from collections import Counter
from pathlib import Path


def fail(msg):
    sys.exit(f"llama_cpp_peer.py: error: {msg}")


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def ours_rows(doc, path):
    rows = {r["dtype"]: r for r in doc["rows"] if r["dtype"]}
    if not rows:
        fail(f"{path} has no mamba-gpu rows")
    return rows


def cmd_prompt(path):
    print(" ".join(str(i) for i in load(path)["decode_prompt"]))


def cmd_types(paths):
    import gguf  # from the llama.cpp tree's gguf-py, on PYTHONPATH

    for p in paths:
        r = gguf.GGUFReader(p)
        c = Counter(t.tensor_type.name for t in r.tensors)
        print(f"{Path(p).name}: {len(r.tensors)} tensors, " + ", ".join(
            f"{k} {v}" for k, v in sorted(c.items())))
        kinds = {}
        for t in r.tensors:
            kinds.setdefault(t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name,
                             set()).add(t.tensor_type.name)
        print("  " + "; ".join(f"{k}: {'/'.join(sorted(v))}" for k, v in sorted(kinds.items())))


def agree(a, b):
    same = sum(1 for x, y in zip(a, b) if x == y)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return same, first


def cmd_greedy(n, ours_path, pairs):
    ours = ours_rows(load(ours_path), ours_path)
    prompt = load(ours_path)["decode_prompt"]
    llama = {}
    for p in pairs:
        label, _, f = p.partition("=")
        ids = [int(x) for x in Path(f).read_text().split()]
        if len(ids) < n:
            fail(f"{f}: {len(ids)} ids, fewer than {n}")
        llama[label] = ids[:n]
    for k, r in ours.items():
        if len(r["decode_ids"]) < n:
            fail(f"ours {k}: {len(r['decode_ids'])} ids, fewer than {n}")
    print(f"prompt ({len(prompt)} ids): {' '.join(map(str, prompt))}\n")
    print(f"| a | b | ids equal (of {n}) | first difference at |")
    print("|---|---|---:|---:|")
    pairs_to_show = [("llama.cpp " + k, v, "ours " + o) for k, v in llama.items()
                     for o in ours if o.lower() == k.lower()]
    pairs_to_show += [("llama.cpp " + k, v, "ours f32") for k, v in llama.items()
                      if k.lower() != "f32" and "f32" in ours]
    for la, ids, ob in pairs_to_show:
        theirs = ours[ob.split()[1]]["decode_ids"][:n]
        same, first = agree(ids, theirs)
        print(f"| {la} | {ob} | {same} | {'-' if first is None else first} |")
    for o in ours:
        if o != "f32" and "f32" in ours:
            same, first = agree(ours[o]["decode_ids"][:n], ours["f32"]["decode_ids"][:n])
            print(f"| ours {o} | ours f32 | {same} | {'-' if first is None else first} |")
    print()
    for k, v in llama.items():
        print(f"- llama.cpp {k}: {' '.join(map(str, v))}")
    for k, r in ours.items():
        print(f"- ours {k}: {' '.join(map(str, r['decode_ids'][:n]))}")


def cmd_table(run_dir, rounds):
    run = Path(run_dir)
    series = {}  # (engine, weights, test) -> [tok/s per round]

    def add(key, v):
        series.setdefault(key, []).append(v)

    for r in range(1, rounds + 1):
        for q in ("F32", "F16", "Q8_0"):
            path = run / f"round{r}-llama-{q}.json"
            doc = load(path)
            for t in doc:
                test = f"pp{t['n_prompt']}" if t["n_gen"] == 0 else f"tg{t['n_gen']}"
                add(("llama.cpp", q, test), float(t["avg_ts"]))
        path = run / f"round{r}-ours.json"
        doc = load(path)
        for k, row in ours_rows(doc, path).items():
            add(("mamba-gpu", k, f"decode {doc['steps']}"), row["decode_tok_s"]["median"])
            add(("mamba-gpu", k, f"prefill {doc['prefill']}"), row["prefill_tok_s"]["median"])
    for k, v in series.items():
        if len(v) != rounds:
            fail(f"{k}: {len(v)} values for {rounds} rounds")
    med = {k: statistics.median(v) for k, v in series.items()}

    head = " | ".join(f"round {r}" for r in range(1, rounds + 1))
    print(f"| engine | weights | test | median tok/s | {head} |")
    print("|---|---|---|---:|" + "---:|" * rounds)
    order = sorted(series, key=lambda k: (k[0] != "llama.cpp", k[2].split()[0] not in ("tg64", "decode"),
                                          ["F32", "F16", "Q8_0", "f32", "f16", "bf16"].index(k[1])))
    for k in order:
        runs = " | ".join(f"{x:.1f}" for x in series[k])
        print(f"| {k[0]} | {k[1]} | {k[2]} | {med[k]:.1f} | {runs} |")

    steps = next(k[2] for k in series if k[2].startswith("decode"))
    pre = next(k[2] for k in series if k[2].startswith("prefill"))
    tg = next(k[2] for k in series if k[2].startswith("tg"))
    pp = next(k[2] for k in series if k[2].startswith("pp"))
    print("\n| ours / llama.cpp (medians) | decode vs tg | prefill vs pp |")
    print("|---|---:|---:|")
    for o, q in (("f32", "F32"), ("f16", "F16"), ("bf16", "F16"), ("f16", "Q8_0"), ("bf16", "Q8_0")):
        d = med[("mamba-gpu", o, steps)] / med[("llama.cpp", q, tg)]
        p = med[("mamba-gpu", o, pre)] / med[("llama.cpp", q, pp)]
        print(f"| ours {o} / llama.cpp {q} | {d:.2f} | {p:.2f} |")


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "prompt" and len(args) == 1:
        cmd_prompt(args[0])
    elif cmd == "types" and args:
        cmd_types(args)
    elif cmd == "greedy" and len(args) >= 3:
        cmd_greedy(int(args[0]), args[1], args[2:])
    elif cmd == "table" and len(args) == 2:
        cmd_table(args[0], int(args[1]))
    else:
        fail(f"bad arguments: {' '.join(argv[1:])}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
