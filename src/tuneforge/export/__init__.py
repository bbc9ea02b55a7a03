"""Export: fold a run into a standard model folder or GGUF file, and verify what was written.

- `run.py`: `export_run` (HF folder, merged GGUF, LoRA-only GGUF), the verification report, FORMATS
- `logprob_check.py`: next-token log-prob comparison of a reload against its source (the one comparison)
- `gguf_lora.py`: llama.cpp's converters, fetched from the llama-cpp-python sdist
  (`python -m tuneforge.export.gguf_lora --fetch`)
- `llamacpp.py`: reload a GGUF file in llama.cpp itself (the `llamacpp` extra)
- `modelfile.py`: the Ollama Modelfile, its template rendered from the tokenizer's chat template

Import from the submodules (`from tuneforge.export.run import export_run`): this file imports nothing, so
`python -m tuneforge.export.gguf_lora` and the CLI's parser never load torch.
"""
