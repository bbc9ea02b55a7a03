"""Loss-based membership inference: can the model's loss on a sample tell whether it was trained on?

The attack is the loss threshold of Yeom, Giacomelli, Fredrikson, Jha, 2018 ("Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting", IEEE CSF; https://arxiv.org/abs/1709.01604): a sample whose loss is
below a threshold is called a member. Over every threshold this is the ROC curve of the score -loss on the run's
training samples (members) against held-out samples of the same data (non-members). Reported as the literature
does since Carlini et al. 2022 ("Membership Inference Attacks From First Principles", IEEE S&P;
https://arxiv.org/abs/2112.03570): the AUC, and the true-positive rate at a low false-positive rate (1%, 0.1%),
where an attack that exposes a few samples with confidence shows even when its AUC is near 0.5.

The 95% intervals are percentile bootstraps that resample members and non-members separately (each class keeps
its size), through tuneforge.eval.stats.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.audit import AuditError
from tuneforge.audit.scoring import sample_logprobs
from tuneforge.config import DataConfig, DatasetSpec, RunConfig
from tuneforge.data.build import build_sft, build_text
from tuneforge.data.preference import build_preference, build_test_pairs
from tuneforge.data.render import Rendered, render_conversation
from tuneforge.data.schema import Conversation, Message
from tuneforge.eval.metrics import MetricRows
from tuneforge.eval.stats import Interval, bootstrap
from tuneforge.stages.table import STAGES

LOW_FPRS = (0.01, 0.001)  # the false-positive rates whose TPR is reported
# Stages whose training samples have no loss a causal LM gives them, and why.
NO_LOSS = {
    "rm": "a reward model scores whole conversations with a one-score head; it gives no language-model loss",
    "grpo": "grpo trains on prompts with answers it samples itself; no fixed training text has a loss to compare",
}


# --- the attack's figures ------------------------------------------------------------------------------------


def roc_curve(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1), one point per distinct score, higher scores called positive first.

    scikit-learn's roc_curve, which tuneforge does not depend on (eval.metrics.roc_auc says why), vectorised
    so a bootstrap of a thousand resamples stays fast."""
    s, y = np.asarray(scores, dtype=float), np.asarray(positive).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise AuditError(f"a ROC curve needs both classes; got {n_pos} members and {n_neg} non-members")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last sample of each distinct score
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def auc(scores: Any, positive: Any) -> float:
    """Area under the ROC curve: the Mann-Whitney statistic of eval.metrics.roc_auc (ties count half)."""
    fpr, tpr = roc_curve(scores, positive)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores: Any, positive: Any, fpr: float) -> float:
    """The highest true-positive rate of a threshold whose false-positive rate is at most `fpr`."""
    fprs, tprs = roc_curve(scores, positive)
    return float(tprs[fprs <= fpr].max())


def stratified_indices(n_pos: int, n_neg: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n_pos + n_neg] row indices: positives (rows 0..n_pos-1) and negatives resampled apart."""
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, n_pos, size=(resamples, n_pos))
    neg = n_pos + rng.integers(0, n_neg, size=(resamples, n_neg))
    return np.concatenate([pos, neg], axis=1)


def attack_figures(member_loss: Sequence[float], nonmember_loss: Sequence[float], resamples: int, seed: int) -> dict:
    """AUC and TPR at low FPR of the loss threshold, with 95% stratified bootstrap intervals."""
    m, n = np.asarray(member_loss, dtype=float), np.asarray(nonmember_loss, dtype=float)
    if len(m) < 2 or len(n) < 2:
        raise AuditError(f"membership inference needs at least 2 members and 2 non-members; got {len(m)}, {len(n)}")
    rows = np.stack([-np.r_[m, n], np.r_[np.ones(len(m)), np.zeros(len(n))]], axis=1)  # score: -loss
    idx = stratified_indices(len(m), len(n), resamples, seed)

    def interval(reduce: Any) -> Interval:
        return bootstrap(MetricRows(rows, reduce), idx)

    out: dict[str, Any] = {"members": len(m), "nonmembers": len(n)}
    out["auc"] = _rounded(interval(lambda r: auc(r[:, 0], r[:, 1])))
    for rate in LOW_FPRS:
        key = f"tpr_at_fpr_{rate:g}"
        out[key] = _rounded(interval(lambda r, rate=rate: tpr_at_fpr(r[:, 0], r[:, 1], rate)))
        # below 1/rate non-members, the lowest non-zero FPR is above `rate`: only the threshold with FPR 0 counts
        out[key]["resolved"] = len(n) >= round(1 / rate)
    out["loss_members_mean"] = round(float(m.mean()), 4)
    out["loss_nonmembers_mean"] = round(float(n.mean()), 4)
    fpr, tpr = roc_curve(rows[:, 0], rows[:, 1])
    out["roc"] = {"fpr": np.round(fpr, 5).tolist(), "tpr": np.round(tpr, 5).tolist()}
    return out


def _rounded(i: Interval) -> dict[str, Any]:
    return {"value": round(i.value, 4), "low": round(i.low, 4), "high": round(i.high, 4)}


# --- members and non-members of a run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Membership:
    members: list[Rendered]  # distinct training samples of the run (never its canaries)
    nonmembers: list[Rendered]  # distinct held-out samples, none a copy of a member
    source: str  # where the non-members come from
    dropped: int  # held-out samples left out as exact copies of training samples


def membership(cfg: RunConfig, tokenizer: Any, heldout: str | None) -> Membership:
    """The run's training samples and its held-out ones, rebuilt by the data pipeline from the run's data config
    (the same seeded split); `heldout` (a registered dataset name or a path) replaces the validation split."""
    if cfg.stage in NO_LOSS:
        raise AuditError(f"membership inference by loss does not apply to stage {cfg.stage!r}: {NO_LOSS[cfg.stage]}")
    rows = ROWS[STAGES[cfg.stage].data]
    data = cfg.data.model_copy(update={"canaries": None})  # the canaries are audited on their own
    train, val = rows(data, tokenizer)
    if heldout is not None:
        spec = DatasetSpec(path=heldout) if _is_path(heldout) else DatasetSpec(name=heldout)
        alone = data.model_copy(update={"datasets": [spec], "val_size": 0.0, "mix_size": None, "test_datasets": []})
        val, source = rows(alone, tokenizer)[0], f"held-out dataset {heldout}"
    elif val is None:
        raise AuditError(
            f"run {cfg.name!r} has no held-out split (data.val_size={cfg.data.val_size:g}) to compare its training "
            "samples with: give held-out samples of the same kind with --heldout NAME_OR_PATH (a dataset of "
            "dataset_info.json, or a file), or audit only the canaries (--canaries)"
        )
    else:
        source = "validation split" if cfg.data.val_size > 0 else "data.test_datasets"
    members = _distinct(train)
    seen = {_key(r) for r in members}
    distinct_val = _distinct(val)
    nonmembers = [r for r in distinct_val if _key(r) not in seen]
    return Membership(members, nonmembers, source, len(distinct_val) - len(nonmembers))


def _is_path(value: str) -> bool:
    return Path(value).expanduser().exists()


def _key(r: Rendered) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(r.input_ids), tuple(r.labels)


def _distinct(rows: Sequence[Rendered]) -> list[Rendered]:
    return list({_key(r): r for r in rows}.values())


def _rendered(ds: Any) -> list[Rendered]:
    return [Rendered(list(r["input_ids"]), list(r["labels"])) for r in ds]


def _chat_rows(data: DataConfig, tokenizer: Any) -> tuple[list[Rendered], list[Rendered] | None]:
    built = build_sft(data, tokenizer)
    return _rendered(built.train), (_rendered(built.val) if built.val is not None else None)


def _text_rows(data: DataConfig, tokenizer: Any) -> tuple[list[Rendered], list[Rendered] | None]:
    # stage pt trains on blocks of concatenated documents; a document's loss is read on its first cutoff_len tokens
    built = build_text(data, tokenizer)
    return _rendered(built.train), (_rendered(built.val) if built.val is not None else None)


def _answers(ds: Any, tokenizer: Any, data: DataConfig, column: str) -> list[Rendered]:
    """prompt + the trained-towards answer (dpo: chosen; kto: a desirable completion), as a chat sample."""
    out = []
    for row in ds:
        if column == "completion" and not row["label"]:
            continue  # an undesirable completion was trained away from, not towards
        messages = [Message(m["role"], m["content"]) for m in row["prompt"]]
        conv = Conversation((*messages, Message("assistant", row[column][-1]["content"])))
        rendered = render_conversation(tokenizer, conv, data.cutoff_len, False, data.tool_format, data.max_tools)
        if rendered is not None:
            out.append(rendered)
    return out


def _pair_rows(data: DataConfig, tokenizer: Any) -> tuple[list[Rendered], list[Rendered] | None]:
    built = build_preference(data, "pairs")
    val = built.val if built.val is not None else build_test_pairs(data)
    return _answers(built.train, tokenizer, data, "chosen"), (
        _answers(val, tokenizer, data, "chosen") if val is not None else None
    )


def _kto_rows(data: DataConfig, tokenizer: Any) -> tuple[list[Rendered], list[Rendered] | None]:
    built = build_preference(data, "kto")
    val = built.val
    return _answers(built.train, tokenizer, data, "completion"), (
        _answers(val, tokenizer, data, "completion") if val is not None else None
    )


# the stage table's kind of sample -> (train, held-out) rendered samples of a data config
ROWS = {"chat": _chat_rows, "text": _text_rows, "pairs": _pair_rows, "kto": _kto_rows}


def audit_membership(
    model: Any, pad_id: int, data: Membership, n: int | None, batch_size: int, resamples: int, seed: int
) -> dict[str, Any]:
    """Score at most `n` members and `n` non-members (a seeded draw) and the attack's figures."""
    rng = random.Random(f"{seed}/mia")
    members = data.members if n is None or len(data.members) <= n else rng.sample(data.members, n)
    nonmembers = data.nonmembers if n is None or len(data.nonmembers) <= n else rng.sample(data.nonmembers, n)
    if len(members) < 2 or len(nonmembers) < 2:
        raise AuditError(
            f"membership inference needs at least 2 training and 2 held-out samples; there are {len(members)} "
            f"and {len(nonmembers)} ({data.source}, {data.dropped} held-out samples were copies of training ones)"
        )
    loss = []
    for rows, who in ((members, "members"), (nonmembers, "non-members")):
        scored = sample_logprobs(model, rows, batch_size, pad_id, f"scoring {who}")
        loss.append(-scored[:, 0] / np.maximum(scored[:, 1], 1))  # mean loss per trained token, as training's
    figures = attack_figures(loss[0], loss[1], resamples, seed)
    return {
        "attack": "loss threshold (Yeom et al. 2018)",
        "nonmember_source": data.source,
        "members_available": len(data.members),
        "nonmembers_available": len(data.nonmembers),
        "heldout_copies_dropped": data.dropped,
        **figures,
    }


__all__ = [
    "LOW_FPRS",
    "Membership",
    "attack_figures",
    "auc",
    "audit_membership",
    "membership",
    "roc_curve",
    "stratified_indices",
    "tpr_at_fpr",
]
