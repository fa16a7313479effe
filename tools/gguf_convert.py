#!/usr/bin/env python3
"""Runs llama.cpp's convert_hf_to_gguf.py in-process (helper of tools/make_gguf_fixtures.sh).

  gguf_convert.py --llama-cpp LLAMA_CPP_DIR [--no-vocab] -- MODEL_DIR CONVERTER_ARGS...

The converter's weights and metadata path runs as it is. Two of its vocabulary steps
are replaced, and only these:

* A BPE tokenizer.json whose pre-tokenizer hash is not in the converter's table
  (`get_vocab_base_pre`, which raises NotImplementedError: the demo model's tokenizer
  was trained here, so no table has it) is written with `tokenizer.ggml.pre = "gpt-2"`
  when its pre-tokenizer is ByteLevel with GPT-2's regex and it has no normalizer: the
  entry convert_hf_to_gguf_update.py would add for it. Anything else still fails.
* --no-vocab: `set_vocab` writes no vocabulary (`tokenizer.ggml.model = "none"`). For
  a model without tokenizer files the converter would embed llama.cpp's GPT-NeoX
  vocabulary cut to the model's size, with all 50k of its merges (~0.8 MB per file),
  which says nothing about these tiny test models.
"""

import json
import runpy
import sys
from pathlib import Path


def main():
    argv = sys.argv[1:]
    if "--" not in argv or "--llama-cpp" not in argv:
        sys.exit(__doc__)
    sep = argv.index("--")
    ours, theirs = argv[:sep], argv[sep + 1:]
    llama = Path(ours[ours.index("--llama-cpp") + 1]).resolve()
    script = llama / "convert_hf_to_gguf.py"
    if not script.is_file():
        sys.exit(f"gguf_convert.py: no {script}")
    # The converter finds conversion/ and models/ through sys.path[0], and its gguf-py
    # (inserted by the script itself too; here before conversion.base imports gguf).
    sys.path.insert(0, str(llama))
    sys.path.insert(1, str(llama / "gguf-py"))
    import conversion.base as base
    import conversion.mamba as mamba

    original = base.TextModel.get_vocab_base_pre

    def pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            tj = json.loads((Path(self.dir_model) / "tokenizer.json").read_text())
            p = tj.get("pre_tokenizer") or {}
            if (p.get("type") == "ByteLevel" and p.get("use_regex", True)
                    and tj.get("normalizer") is None):
                print("gguf_convert.py: pre-tokenizer hash not in the converter's table; "
                      "ByteLevel with GPT-2's regex: writing tokenizer.ggml.pre = 'gpt-2'",
                      file=sys.stderr)
                return "gpt-2"
            raise

    base.TextModel.get_vocab_base_pre = pre
    if "--no-vocab" in ours:
        for cls in (mamba.MambaModel, mamba.Mamba2Model):
            cls.set_vocab = lambda self: self._set_vocab_none()
    sys.argv = [str(script)] + theirs
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
