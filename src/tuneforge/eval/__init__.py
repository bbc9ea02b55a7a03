"""Evaluation: benchmarks and task metrics for a base model, a run's adapter, or several side by side.

    from tuneforge.eval import evaluate
    report = evaluate(cfg)                 # cfg: a RunConfig with an `eval:` section
    report.score("arc_easy", "base")       # the primary metric; report.data is report.json

Tasks are `eval.tasks` entries: a type from TASK_TYPES (how items are scored) on local data in a layout
from READERS. See docs/eval.md.
"""

from __future__ import annotations

from tuneforge.eval.readers import READERS, EvalError, Example, read_split
from tuneforge.eval.report import EvalReport, TaskResult
from tuneforge.eval.run import evaluate, load_tasks, resolve_models
from tuneforge.eval.tasks import TASK_TYPES, Task

__all__ = [
    "READERS",
    "TASK_TYPES",
    "EvalError",
    "EvalReport",
    "Example",
    "Task",
    "TaskResult",
    "evaluate",
    "load_tasks",
    "read_split",
    "resolve_models",
]
