"""Data: files -> samples (schema, formats, sources, registry) -> token ids (render) -> datasets (build).

Kept free of imports so that `tuneforge.data.schema` (used by chat and serving) loads without `datasets`.
"""
