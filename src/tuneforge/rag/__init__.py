"""Retrieval: an on-disk index (index.py), RAG generation (pipeline.py), retrieval metrics (metrics.py) and
the knowledge-injection lab (lab.py). See docs/rag.md."""
