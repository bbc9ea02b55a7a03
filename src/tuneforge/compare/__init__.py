"""`tuneforge compare CONFIG`: every way to specialise on one task side by side (docs/compare.md).

    tuneforge compare examples/compare.yaml

One held-out task, many arms: zero-shot, few-shot (k solved training examples, drawn at random or by
similarity), RAG over the user's documents, any method of the method table trained as an ordinary run, and
tuned models with few-shot examples or retrieval. Each arm gets its score with a 95% interval, its wall time,
peak memory, trainable parameters and its serving cost (tokens, and answer seconds (wall clock) per 1,000
answers); the table, a score-vs-cost plot with the Pareto front, and a recommendation: the cheapest arm whose
paired difference to the best arm has a 95% interval containing 0 (pick.py).

`source.py` is where the task comes from (SOURCES: the user's task, or the knowledge lab's facts); `plan.py`
checks every arm before anything runs; `context.py` chooses the few-shot examples and passages; the trained
arms train through tuneforge.sweep's local worker (a process and a run folder each); `worker.py` answers the
task with one arm in its own process; `report.py` and `pick.py` score, compare and write; `forgetting.py` runs
the forgetting report of the trained arms' runs (compare.forgetting) and puts it into the table per arm.
"""

from tuneforge.compare.plan import Arm, ComparePlan, plan_compare
from tuneforge.compare.run import CompareOutcome, run_compare
from tuneforge.compare.source import SOURCES, CompareError

__all__ = ["SOURCES", "Arm", "CompareError", "CompareOutcome", "ComparePlan", "plan_compare", "run_compare"]
