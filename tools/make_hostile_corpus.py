#!/usr/bin/env python3
"""Builds a corpus of hostile model directories for tools/hostile_sweep.sh.

Python standard library only. Each case is a directory holding config.json,
model.safetensors (or a sharded index) and tokenizer.json derived from the demo model
(examples/demo_model) or a fixture (tests/fixtures/models), with one thing broken:
truncated / oversized / garbled safetensors headers, wrong dtypes, wrong / zero / huge
shapes, missing or extra tensors, NaN / inf values, sharded indexes pointing at
missing shards or at themselves, config.json keys set to 0, -1, 1e8, 2^63, u64::MAX,
floats, strings, null, nested garbage or Python's Infinity / NaN tokens, a
tokenizer.json that is missing or garbage, directories in place of files, empty
files. The loader must answer each with exit 0 or a clear exit-1 error.

usage: tools/make_hostile_corpus.py OUT_DIR      (prints the number of cases)
"""

import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "examples", "demo_model")
FIX = os.path.join(ROOT, "tests", "fixtures", "models")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def split_st(blob):
    """(header dict, data bytes) of a safetensors blob."""
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join_st(header, data, pad=True):
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def rebuild(tensors):
    """A safetensors blob from [(name, dtype, shape, bytes)] with fresh offsets."""
    header, data, off = {"__metadata__": {"format": "pt"}}, b"", 0
    for name, dt, shape, b in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        data += b
        off += len(b)
    return join_st(header, data)


def tensors_of(blob):
    header, data = split_st(blob)
    out = []
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out.append((k, v["dtype"], v["shape"], data[b:e]))
    out.sort(key=lambda t: header[t[0]]["data_offsets"][0])
    return out


NAN = {"F32": struct.pack("<I", 0x7FC00000), "F16": struct.pack("<H", 0x7E00),
       "BF16": struct.pack("<H", 0x7FC0)}
INF = {"F32": struct.pack("<I", 0x7F800000), "F16": struct.pack("<H", 0x7C00),
       "BF16": struct.pack("<H", 0x7F80)}
HUNDRED = {"F32": struct.pack("<f", 100.0), "F16": struct.pack("<H", 0x5640),
           "BF16": struct.pack("<H", 0x42C8)}


def poke(tensors, suffix, value_by_dtype, index=0):
    out = []
    for name, dt, shape, b in tensors:
        if name.endswith(suffix):
            v = value_by_dtype[dt]
            b = b[: index * len(v)] + v + b[(index + 1) * len(v) :]
            suffix = "\0never"  # only the first match
        out.append((name, dt, shape, b))
    return out


class Corpus:
    def __init__(self, out):
        self.out = out
        self.n = 0

    def case(self, name, base, config=None, st=None, tok=None, files=None):
        """A case dir: `base` files copied, then overrides. A value of None keeps the
        base file, "-" deletes it, "DIR" puts a directory there, bytes/str write."""
        d = os.path.join(self.out, f"{self.n:03d}_{name}")
        self.n += 1
        os.makedirs(d)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            src = os.path.join(base, f)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(d, f))
        if not os.path.exists(os.path.join(base, "tokenizer.json")):
            # The fixtures have no tokenizer (and a smaller vocabulary than the demo's):
            # the sweep prompts them with ids (tools/hostile_sweep.sh reads ARGS).
            with open(os.path.join(d, "ARGS"), "w") as fh:
                fh.write("--prompt-ids 1,2,3\n")
        over = dict(files or {})
        if config is not None:
            over["config.json"] = config
        if st is not None:
            over["model.safetensors"] = st
        if tok is not None:
            over["tokenizer.json"] = tok
        for f, v in over.items():
            p = os.path.join(d, f)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
            if v == "-":
                continue
            if v == "DIR":
                os.makedirs(p)
                continue
            with open(p, "wb") as fh:
                fh.write(v.encode() if isinstance(v, str) else v)


def main():
    out = sys.argv[1]
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    c = Corpus(out)
    demo_cfg = json.loads(read(os.path.join(DEMO, "config.json")))
    demo_st = read(os.path.join(DEMO, "model.safetensors"))
    demo_t = tensors_of(demo_st)

    # Controls: the untouched demo model and fixtures load and generate.
    c.case("ok_demo", DEMO)
    for fx in sorted(os.listdir(FIX)):
        if os.path.isdir(os.path.join(FIX, fx)):
            c.case(f"ok_{fx}", os.path.join(FIX, fx))

    # config.json: every numeric key of the HF layout set to hostile values.
    raw_values = {
        "zero": "0", "neg": "-1", "1e8": "100000000", "1e8f": "1e8", "2p63": "9223372036854775808",
        "2p63m1": "9223372036854775807", "u64max": "18446744073709551615",
        "2p64": "18446744073709551616", "float": "2.5", "string": '"12"', "null": "null",
        "nested": '{"a": [1, {"b": null}]}', "Infinity": "Infinity", "NaN": "NaN",
    }
    keys = ["hidden_size", "num_hidden_layers", "vocab_size", "state_size", "conv_kernel",
            "expand", "intermediate_size", "time_step_rank", "layer_norm_epsilon",
            "eos_token_id", "pad_token_id", "bos_token_id"]
    for key in keys:
        for tag, raw in raw_values.items():
            body = json.dumps({k: (f"@@{k}@@" if k == key else v) for k, v in demo_cfg.items()})
            body = body.replace(f'"@@{key}@@"', raw)
            c.case(f"cfg_{key}_{tag}", DEMO, config=body)
    # Several keys at once: hidden_size and intermediate_size consistent but huge.
    for tag, h in [("2p62", 1 << 62), ("2p40", 1 << 40), ("2p31", 1 << 31)]:
        cfg = dict(demo_cfg, hidden_size=h, intermediate_size=2 * h)
        c.case(f"cfg_consistent_huge_{tag}", DEMO, config=json.dumps(cfg))
    c.case("cfg_eos_vocab", DEMO, config=json.dumps(dict(demo_cfg, eos_token_id=2048)))
    c.case("cfg_eos_list", DEMO, config=json.dumps(dict(demo_cfg, eos_token_id=[5000, 1])))

    # The original (state-spaces) layout.
    ssm = os.path.join(FIX, "ssm_layout")
    ssm_cfg = json.loads(read(os.path.join(ssm, "config.json")))
    for key in ["d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"]:
        for tag in ["zero", "neg", "1e8", "2p63", "u64max", "float"]:
            body = json.dumps(dict(ssm_cfg, **{key: "@@"})).replace('"@@"', raw_values[tag])
            c.case(f"ssm_{key}_{tag}", ssm, config=body)
    for key in ["d_state", "expand", "dt_rank", "d_conv"]:
        for tag in ["zero", "2p63", "u64max", "string"]:
            sc = dict(ssm_cfg["ssm_cfg"], **{key: "@@"})
            body = json.dumps(dict(ssm_cfg, ssm_cfg=sc)).replace('"@@"', raw_values[tag])
            c.case(f"ssm_cfg_{key}_{tag}", ssm, config=body)
    c.case("ssm_cfg_garbage", ssm, config=json.dumps(dict(ssm_cfg, ssm_cfg=[1, 2])))

    # config.json as a file.
    for tag, body in [("empty", b""), ("garbage", bytes(range(256)) * 4), ("array", "[1,2]"),
                      ("number", "42"), ("truncated", json.dumps(demo_cfg)[:50]),
                      ("infinity", "Infinity"), ("deep", "[" * 100000 + "]" * 100000),
                      ("utf16", json.dumps(demo_cfg).encode("utf-16"))]:
        c.case(f"cfgfile_{tag}", DEMO, config=body)
    c.case("cfgfile_missing", DEMO, config="-")
    c.case("cfgfile_dir", DEMO, config="DIR")

    # safetensors: files and headers.
    n = struct.unpack("<Q", demo_st[:8])[0]
    header, data = split_st(demo_st)
    for tag, blob in [
        ("empty", b""), ("7bytes", demo_st[:7]), ("8bytes", demo_st[:8]),
        ("header_cut", demo_st[: 8 + n // 2]), ("data_half", demo_st[: len(demo_st) // 2]),
        ("data_minus1", demo_st[:-1]), ("oversized", demo_st + b"\0" * 100),
        ("hlen_u64max", struct.pack("<Q", 2**64 - 1) + demo_st[8:]),
        ("hlen_2p63", struct.pack("<Q", 2**63) + demo_st[8:]),
        ("hlen_200mb", struct.pack("<Q", 200_000_000) + demo_st[8:]),
        ("hlen_file_plus1", struct.pack("<Q", len(demo_st) - 7) + demo_st[8:]),
        ("hlen_zero", struct.pack("<Q", 0) + demo_st[8:]),
        ("garbled_header", demo_st[:8] + bytes((b * 7 + 3) % 256 for b in demo_st[8 : 8 + n])
         + data),
        ("header_not_object", join_st([1, 2, 3], data)),
        ("header_not_utf8", demo_st[:8] + b"\xff" * n + data),
        ("header_null_entry", join_st(dict(header, **{"backbone.norm_f.weight": None}), data)),
        ("all_zero", b"\0" * len(demo_st)),
    ]:
        c.case(f"st_{tag}", DEMO, st=blob)

    def edit(name, field, value):
        h = json.loads(json.dumps(header))
        h[name][field] = value
        return join_st(h, data)

    emb = "backbone.embeddings.weight"
    norm = "backbone.layers.0.norm.weight"
    for tag, f, v in [
        ("dtype_i32", "dtype", "I32"), ("dtype_f64", "dtype", "F64"),
        ("dtype_bool", "dtype", "BOOL"), ("dtype_unknown", "dtype", "Q4"),
        ("dtype_f8", "dtype", "F8_E4M3"), ("dtype_number", "dtype", 7),
        ("shape_zero", "shape", [0, 192]), ("shape_huge", "shape", [2**62, 2**62]),
        ("shape_u64max", "shape", [2**64 - 1]), ("shape_neg", "shape", [-1, 192]),
        ("shape_wrong", "shape", [192, 2048]), ("shape_string", "shape", "big"),
        ("shape_scalar", "shape", []), ("offsets_reversed", "data_offsets", [786432, 0]),
        ("offsets_huge", "data_offsets", [0, 2**64 - 1]), ("offsets_short", "data_offsets", [0]),
    ]:
        c.case(f"st_{tag}", DEMO, st=edit(emb, f, v))
    c.case("st_norm_shape_1", DEMO, st=edit(norm, "shape", [1]))
    c.case("st_norm_dtype_f32", DEMO, st=edit(norm, "dtype", "F32"))

    # Tensor sets.
    c.case("st_missing_norm_f", DEMO,
           st=rebuild([t for t in demo_t if t[0] != "backbone.norm_f.weight"]))
    c.case("st_missing_layer3", DEMO,
           st=rebuild([t for t in demo_t if ".layers.3." not in t[0]]))
    c.case("st_missing_embedding", DEMO, st=rebuild([t for t in demo_t if t[0] != emb]))
    c.case("st_extra_tensor", DEMO, st=rebuild(demo_t + [("extra.weight", "F16", [2], b"\0" * 4)]))
    c.case("st_extra_layer", DEMO, st=rebuild(
        demo_t + [(t[0].replace("layers.3.", "layers.4."),) + t[1:] for t in demo_t
                  if ".layers.3." in t[0]]))
    c.case("st_no_tensors", DEMO, st=rebuild([]))
    c.case("st_lm_head_tied", DEMO, st=rebuild(demo_t + [("lm_head.weight",) + demo_t[0][1:]]))
    # Values.
    c.case("val_nan_norm", DEMO, st=rebuild(poke(demo_t, "layers.0.norm.weight", NAN)))
    c.case("val_inf_alog", DEMO, st=rebuild(poke(demo_t, "layers.1.mixer.A_log", INF)))
    c.case("val_nan_embedding", DEMO, st=rebuild(poke(demo_t, emb, NAN, 100)))
    c.case("val_inf_out_proj", DEMO, st=rebuild(poke(demo_t, "out_proj.weight", INF, 7)))
    c.case("val_alog_100", DEMO, st=rebuild(poke(demo_t, "mixer.A_log", HUNDRED)))
    for fx in ["bf16_untied_s8", "tiny_tied"]:
        t = tensors_of(read(os.path.join(FIX, fx, "model.safetensors")))
        c.case(f"val_nan_{fx}", os.path.join(FIX, fx), st=rebuild(poke(t, "norm_f.weight", NAN)))
        c.case(f"val_inf_{fx}", os.path.join(FIX, fx), st=rebuild(poke(t, "lm_head.weight", INF)
               if fx.startswith("bf16") else poke(t, "mixer.D", INF)))

    # Files: directories and absences.
    c.case("st_dir", DEMO, st="DIR")
    c.case("st_missing", DEMO, st="-")
    c.case("tok_missing", DEMO, tok="-")
    c.case("tok_empty", DEMO, tok=b"")
    c.case("tok_garbage", DEMO, tok=bytes(range(256)))
    c.case("tok_dir", DEMO, tok="DIR")
    c.case("tok_truncated", DEMO, tok=read(os.path.join(DEMO, "tokenizer.json"))[:5000])
    c.case("tok_wrong_model", DEMO, tok='{"version": "1.0", "model": 42}')
    c.case("tok_nested", DEMO, tok='{"model": {"type": "BPE", "vocab": [[[[]]]], "merges": 5}}')

    # Sharded checkpoints.
    half = len(demo_t) // 2
    a, b = rebuild(demo_t[:half]), rebuild(demo_t[half:])
    wm = {t[0]: "model-00001-of-00002.safetensors" for t in demo_t[:half]}
    wm.update({t[0]: "model-00002-of-00002.safetensors" for t in demo_t[half:]})
    shards = {"model.safetensors": "-", "model-00001-of-00002.safetensors": a,
              "model-00002-of-00002.safetensors": b}

    def index(m):
        return json.dumps({"metadata": {}, "weight_map": m})

    c.case("shard_ok", DEMO, files=dict(shards, **{"model.safetensors.index.json": index(wm)}))
    gone = dict(shards, **{"model.safetensors.index.json": index(wm)})
    gone["model-00002-of-00002.safetensors"] = "-"
    c.case("shard_missing_file", DEMO, files=gone)
    for tag, target in [("self", "model.safetensors.index.json"), ("empty_name", ""),
                        ("parent", "../model.safetensors"), ("absolute", "/etc/passwd"),
                        ("config", "config.json")]:
        m = dict(wm, **{emb: target})
        c.case(f"shard_points_{tag}", DEMO,
               files=dict(shards, **{"model.safetensors.index.json": index(m)}))
    c.case("shard_dir", DEMO, files=dict(shards, **{
        "model.safetensors.index.json": index(wm), "model-00002-of-00002.safetensors": "DIR"}))
    for tag, body in [("garbage", "{{{"), ("no_map", "{}"), ("map_list", '{"weight_map": [1]}'),
                      ("map_numbers", '{"weight_map": {"a": 1}}'), ("empty_map", index({})),
                      ("empty_file", "")]:
        c.case(f"shard_index_{tag}", DEMO,
               files=dict(shards, **{"model.safetensors.index.json": body}))
    dup = dict(shards, **{"model.safetensors.index.json": index(wm),
                          "model-00002-of-00002.safetensors": rebuild(demo_t[half - 1 :])})
    c.case("shard_duplicate_tensor", DEMO, files=dup)
    c.case("shard_index_dir", DEMO, files=dict(shards, **{"model.safetensors.index.json": "DIR"}))
    print(c.n)


if __name__ == "__main__":
    main()
