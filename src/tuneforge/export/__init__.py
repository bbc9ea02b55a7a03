"""Export: fold a run into a standard model folder or GGUF file, and verify what was written.

- `run.py`: `export_run` (HF folder, merged GGUF, LoRA-only GGUF), the verification report
- `logprob_check.py`: next-token log-prob comparison of a reload against its source (the one comparison)
- `gguf_lora.py`: llama.cpp's converters, fetched from the llama-cpp-python sdist
- `llamacpp.py`: reload a GGUF file in llama.cpp itself (the `llamacpp` extra)
- `modelfile.py`: the Ollama Modelfile, its template rendered from the tokenizer's chat template
"""

from tuneforge.export.logprob_check import compare
from tuneforge.export.run import (
    FORMATS,
    GGUF_TYPES,
    ExportError,
    ExportResult,
    export_run,
    format_table,
    gguf_converter,
)

__all__ = [
    "FORMATS",
    "GGUF_TYPES",
    "ExportError",
    "ExportResult",
    "compare",
    "export_run",
    "format_table",
    "gguf_converter",
]
