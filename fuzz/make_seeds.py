#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (standard library only): real checkpoints (one
file and split into shards), real config.json files, the demo tokenizer.json.

usage: fuzz/make_seeds.py    (writes fuzz/corpus/<target>/)"""
import glob
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from make_hostile_corpus import rebuild, tensors_of  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rd(p):
    with open(os.path.join(ROOT, p), "rb") as f:
        return f.read()


for sel, fx in [(1, "tiny_tied"), (2, "ssm_layout")]:
    st = rd(f"tests/fixtures/models/{fx}/model.safetensors")
    put("safetensors_load", fx, bytes([sel]) + st)
    t = tensors_of(st)
    a, b = rebuild(t[: len(t) // 2]), rebuild(t[len(t) // 2 :])
    put("safetensors_load", fx + "_sharded",
        bytes([sel | 0x40]) + struct.pack("<I", len(a)) + a + struct.pack("<I", len(b)) + b)
for p in glob.glob(os.path.join(ROOT, "tests/fixtures/models/*/config.json")) + [
        os.path.join(ROOT, "examples/demo_model/config.json")]:
    put("config_json", os.path.basename(os.path.dirname(p)), open(p, "rb").read())
put("tokenizer_load", "demo", rd("examples/demo_model/tokenizer.json"))
