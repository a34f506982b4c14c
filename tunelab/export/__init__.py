"""Turn a run into something other tools run: a merged Hugging Face model, or a GGUF for llama.cpp / Ollama.

    from tunelab.export.merge import merge_run
    from tunelab.export.gguf import check_gguf, export_gguf
    export_gguf(Path("merged/demo"), Path("demo.gguf"), dtype="q8_0")  # f32 | f16 | bf16 | q8_0
    check_gguf(Path("merged/demo"), Path("demo.gguf"))                 # max |logit difference| vs the source

Modules: merge (adapter folded into a standalone model), gguf (export_gguf: metadata, tensors, atomic write),
gguf_tokenizer (the byte-level BPE vocabulary), gguf_check (check_gguf: read the export back and compare).
Nothing is imported here, so `tunelab merge` does not pay for the GGUF modules and vice versa.
"""
