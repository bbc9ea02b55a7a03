"""Inference: load a base model (with a run's adapter) and generate, the one engine every workflow uses.

A run folder is read through `tuneforge.runs` (`model_config_of_run`), never here. Concurrent callers (the
server) go through `LocalEngine.submit`, which batches them (`batching.BatchScheduler`).
"""

from tuneforge.inference.batching import BatchScheduler, Job
from tuneforge.inference.engine import EngineError, LocalEngine
from tuneforge.inference.params import GenerationParams
from tuneforge.inference.shared import engines_for_adapters

__all__ = ["BatchScheduler", "EngineError", "GenerationParams", "Job", "LocalEngine", "engines_for_adapters"]
