"""Private data selection: pick the public samples closest to a private set's distribution, under DP.

The first half of HARDLLM (Deng et al., IEEE TIFS 2025), as docs/privacy.md describes it:

1. embed every public and private sample's text (all-MiniLM-L6-v2, rag.index's embedder);
2. cluster the PUBLIC pool only (faiss k-means; public data costs no privacy);
3. count the private samples per nearest public centroid and release that histogram once with the Gaussian
   mechanism (L2 sensitivity 1 per privacy unit: a sample, or a user whose records share one count);
4. clamp negative counts to 0, normalise, and draw N public samples per cluster in proportion, without
   replacement: at random within a cluster, or those nearest its centroid.

Only step 3 touches private data, and it is one Gaussian mechanism: one step at sample rate 1 for opacus'
accountants, which calibrate sigma (RDP or PRV) and report epsilon for both. Nothing private is written: the
selected rows are public records in their own layout, and selection.json holds the noised histogram only.

    select_public("iso_dates", ["pool.jsonl"], "runs/sel", SelectSettings(n=128, epsilon=1.0))
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import ValidationError

from tuneforge.config import DatasetSpec
from tuneforge.data.formats import format_record
from tuneforge.data.preference import read_sample
from tuneforge.data.registry import INFO_FILE, ResolvedDataset, resolve
from tuneforge.data.schema import Conversation, KTOSample, Preference, Sample, Text
from tuneforge.data.sources import READERS, Record, read_records
from tuneforge.privacy.selection_dp import SelectionError, allocate, calibrate, gaussian_noise, private_counts
from tuneforge.privacy.selection_report import plot_shares, selection_markdown
from tuneforge.rag.index import Embedder, MiniLM

log = logging.getLogger("tuneforge.privacy")

SELECTION_FILE = "selection.json"
PLOT_FILE = "selection.png"


@dataclass(frozen=True)
class SelectSettings:
    n: int  # public samples to select
    epsilon: float  # math.inf: the non-private baseline (no noise)
    delta: float = 1e-5
    clusters: int = 20
    seed: int = 0  # k-means and the draw within clusters (public operations); never the noise
    within: Literal["random", "nearest"] = "random"
    accountant: Literal["rdp", "prv"] = "rdp"  # which one calibrates sigma; both report epsilon
    user_column: str | None = None  # privacy unit: one user (this column of the private records), not a sample
    name: str = "selected"

    def check(self) -> None:
        if not (self.epsilon > 0):  # also refuses NaN
            raise SelectionError(f"epsilon must be > 0 (or inf for the non-private baseline), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise SelectionError(f"delta must lie in (0, 1), got {self.delta}")
        if self.n < 1:
            raise SelectionError(f"n (samples to select) must be >= 1, got {self.n}")
        if self.clusters < 1:
            raise SelectionError(f"clusters must be >= 1, got {self.clusters}")
        if self.within not in ("random", "nearest"):
            raise SelectionError(f"within={self.within!r} is not one of random, nearest")
        if self.accountant not in ("rdp", "prv"):
            raise SelectionError(f"accountant={self.accountant!r} is not one of rdp, prv")
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise SelectionError(f"name {self.name!r}: use letters, digits, _ and - (it names the output files)")


@dataclass
class _Dataset:
    spec: DatasetSpec
    resolved: ResolvedDataset
    records: list[Record]
    sources: list[str]
    texts: list[str]


# ---------------------------------------------------------------------------------------------- reading


def dataset_spec(value: str | DatasetSpec) -> DatasetSpec:
    """A dataset as the CLI names it: a registered name, a file or folder, or a `{...}` YAML dataset entry
    with data.datasets' keys (e.g. `{path: f.json, columns: {response: chosen}, max_samples: 500}`)."""
    if isinstance(value, DatasetSpec):
        return value
    try:
        if value.lstrip().startswith("{"):
            given = yaml.safe_load(value)
            if not isinstance(given, dict):
                raise SelectionError(f"dataset {value!r}: a {{...}} value must be a mapping of dataset keys")
            return DatasetSpec(**given)
        looks_like_path = "/" in value or Path(value).suffix.lower() in READERS or Path(value).exists()
        return DatasetSpec(path=value) if looks_like_path else DatasetSpec(name=value)
    except yaml.YAMLError as e:
        raise SelectionError(f"dataset {value!r} is not valid YAML: {e}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'entry'}: {err['msg']}" for err in e.errors())
        raise SelectionError(f"dataset {value!r}: {problems}") from None


def sample_text(sample: Sample | KTOSample) -> str:
    """The text a sample is embedded by: every turn but the system prompt (shared by a whole dataset, it would
    pull unrelated samples together), then the answer for pairs and KTO examples."""
    if isinstance(sample, Text):
        return sample.text
    if isinstance(sample, Conversation):
        return "\n".join(m.content for m in sample.messages if m.role != "system")
    prompt = "\n".join(m.content for m in sample.prompt if m.role != "system")
    return f"{prompt}\n{sample.chosen if isinstance(sample, Preference) else sample.completion}"


def _read(spec: DatasetSpec, dataset_dir: str | None, what: str) -> _Dataset:
    resolved = resolve(spec, dataset_dir)
    d = _Dataset(spec, resolved, [], [], [])
    records = (pair for file in resolved.files for pair in read_records(file))
    for source, record in itertools.islice(records, spec.max_samples):  # max_samples: the first rows
        d.records.append(record)
        d.sources.append(source)
        d.texts.append(sample_text(_to_sample(resolved, record, source)))
    if not d.records:
        raise SelectionError(f"{what} dataset {resolved.name!r} has no records ({', '.join(map(str, resolved.files))})")
    return d


def _to_sample(d: ResolvedDataset, record: Record, source: str) -> Sample | KTOSample:
    """A record read the way its training stage reads it (pairs, KTO examples, chat or text)."""
    if d.kto:
        return read_sample(d, "kto", record, source)
    if d.ranking or d.format == "preference":
        return read_sample(d, "pairs", record, source)
    return format_record(d.format, record, d.format_spec, source)


def _layout(d: ResolvedDataset) -> tuple[Any, ...]:
    fs = d.format_spec
    return (d.format, tuple(sorted(fs.columns.items())), tuple(sorted(fs.tags.items())), d.ranking, fs.system)


def _entry(d: ResolvedDataset, file_name: str) -> dict[str, Any]:
    """A dataset_info.json entry that reads `file_name` exactly as `d` is read: every column and tag spelled
    out (an entry that lists columns switches off the unlisted ones, which are None here anyway)."""
    fs = d.format_spec
    entry: dict[str, Any] = {"file_name": file_name, "formatting": d.format}
    entry["columns"] = {k: v for k, v in fs.columns.items() if v is not None}
    if fs.tags:
        entry["tags"] = {k: v for k, v in fs.tags.items() if v is not None}
    if d.ranking:
        entry["ranking"] = True
    return entry


# ---------------------------------------------------------------------------------------------- the mechanism


def _kmeans(vectors: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """(label, squared distance to its centroid) per public vector, and the centroid index for the private."""
    try:
        import faiss
    except ImportError:
        raise SelectionError("private selection clusters with faiss: pip install 'tuneforge[rag]'") from None
    # min_points_per_centroid=1: small pools are legitimate here (faiss would only warn); nredo: the best of 3
    # starts, as one unlucky start can leave two centroids in one topic
    km = faiss.Kmeans(vectors.shape[1], k, niter=25, nredo=3, seed=seed, spherical=True, min_points_per_centroid=1)
    km.train(vectors)
    dist, labels = km.index.search(vectors, 1)
    return labels[:, 0].astype(np.int64), dist[:, 0], km.index


def _embed(embedder: Embedder, texts: list[str], what: str) -> np.ndarray:
    log.info("embedding %d %s samples with %s", len(texts), what, embedder.name)
    v = np.ascontiguousarray(embedder.encode(texts), dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------- selecting


def select_public(
    private: str | DatasetSpec,
    public: Sequence[str | DatasetSpec],
    out: str | Path,
    settings: SelectSettings,
    *,
    dataset_dir: str | None = None,
    embedder: Embedder | None = None,
    overwrite: bool = False,
    noise_rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Select `settings.n` samples of the `public` datasets by the DP histogram of `private`; write them to
    `out` (one file and dataset_info.json entry per public layout), with selection.json and a plot of the
    cluster shares. Returns selection.json's content. `noise_rng` is for tests only: a generator anyone can
    seed makes the noise guessable and voids the guarantee; by default it is seeded from OS entropy."""
    settings.check()
    out = Path(out)
    _check_out(out, overwrite)
    if not public:
        raise SelectionError("give at least one public dataset to select from")
    pool = [_read(dataset_spec(p), dataset_dir, "public") for p in public]
    priv = _read(dataset_spec(private), dataset_dir, "private")
    size = sum(len(d.records) for d in pool)
    _check_sizes(settings, size, priv, pool)
    users = _users(priv, settings.user_column) if settings.user_column else None
    units = len(set(users)) if users is not None else len(priv.records)
    if math.isfinite(settings.epsilon) and settings.delta >= 1 / units:
        log.warning("delta=%g is not below 1/%d (privacy units); choose a smaller --delta", settings.delta, units)

    sigma, eps_rdp, eps_prv = calibrate(settings.epsilon, settings.delta, settings.accountant)  # before the work

    embedder = embedder or MiniLM()
    public_vecs = _embed(embedder, [t for d in pool for t in d.texts], "public")
    labels, dist, index = _kmeans(public_vecs, settings.clusters, settings.seed)
    private_labels = index.search(_embed(embedder, priv.texts, "private"), 1)[1][:, 0].astype(np.int64)

    # -- the one private release
    counts = private_counts(private_labels, settings.clusters, users)
    rng = noise_rng if noise_rng is not None else np.random.default_rng(secrets.randbits(128))
    noised = counts + gaussian_noise(sigma, settings.clusters, rng)
    del counts, private_labels  # nothing below may see them: all that follows is post-processing
    # -- post-processing of the release and public data only

    public_counts = np.bincount(labels, minlength=settings.clusters)
    shares = np.clip(noised, 0.0, None)
    fallback = None
    if shares.sum() <= 0:
        fallback = "every noised count was <= 0: the release says nothing, so the public pool's own shares are used"
        log.warning("%s (raise epsilon or lower --clusters)", fallback)
        shares = public_counts.astype(np.float64)
    shares = shares / shares.sum()
    quota = allocate(shares, public_counts, settings.n)
    chosen = _draw(labels, dist, quota, settings)
    summary = _write(out, settings, pool, labels, chosen, embedder.name)
    summary.update(
        private=math.isfinite(settings.epsilon),
        epsilon=None if math.isinf(settings.epsilon) else settings.epsilon,
        delta=settings.delta,
        calibrated_with=settings.accountant,
        epsilon_rdp=None if math.isinf(eps_rdp) else eps_rdp,
        epsilon_prv=None if math.isinf(eps_prv) else eps_prv,
        noise_multiplier=sigma,
        sensitivity=1.0,
        privacy_unit=(
            f"user (column {settings.user_column!r}): each user's records share one count"
            if settings.user_column
            else "sample: one private record adds or removes one count"
        ),
        noise="Gaussian, std = noise_multiplier x sensitivity, per cluster; drawn from OS entropy, not from seed",
        fallback=fallback,
        histogram={
            "public": public_counts.tolist(),
            "private_noised": [round(float(x), 4) for x in noised],
            "private_shares": [round(float(x), 6) for x in shares],
            "selected": quota.tolist(),
        },
    )
    (out / SELECTION_FILE).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_shares(summary, out / PLOT_FILE)
    return summary


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise SelectionError(f"output {out} exists and is not a folder; pick a new --out")
    entries = list(out.iterdir())
    if not entries:
        return
    ours = {SELECTION_FILE, PLOT_FILE, INFO_FILE}
    if not overwrite:
        raise SelectionError(f"output folder {out} exists and is not empty; pick a new --out (or --overwrite)")
    foreign = [p.name for p in entries if p.name not in ours and p.suffix != ".jsonl"]
    if not (out / SELECTION_FILE).is_file() or foreign:
        raise SelectionError(
            f"output folder {out} is not a selection folder (no {SELECTION_FILE}, or other files: "
            f"{', '.join(foreign[:5]) or 'none'}); --overwrite replaces only an earlier selection"
        )
    shutil.rmtree(out)


def _check_sizes(settings: SelectSettings, size: int, priv: _Dataset, pool: list[_Dataset]) -> None:
    if settings.n > size:
        raise SelectionError(f"n={settings.n} is more than the public pool holds ({size} samples)")
    if settings.clusters > size:
        raise SelectionError(f"clusters={settings.clusters} is more than the public pool holds ({size} samples)")
    shared = set(priv.resolved.files) & {f for d in pool for f in d.resolved.files}
    if shared:
        raise SelectionError(f"{', '.join(map(str, sorted(shared)))} is both private and public data")
    verbatim = len(set(priv.texts) & {t for d in pool for t in d.texts})
    if verbatim:
        log.warning("%d private samples also occur verbatim in the public pool (and may be selected)", verbatim)


def _users(priv: _Dataset, column: str) -> list[str]:
    users = []
    for source, record in zip(priv.sources, priv.records, strict=True):
        if record.get(column) is None:
            raise SelectionError(f"{source}: no user column {column!r} (record columns: {', '.join(record)})")
        users.append(json.dumps(record[column], sort_keys=True, default=str))
    return users


def _draw(labels: np.ndarray, dist: np.ndarray, quota: np.ndarray, settings: SelectSettings) -> np.ndarray:
    """Pool indices of the selection, in pool order: per cluster, `quota` of its members."""
    rng = np.random.default_rng(settings.seed)
    picked = []
    for c, count in enumerate(quota):
        members = np.flatnonzero(labels == c)
        if count == 0:
            continue
        if settings.within == "nearest":
            picked.append(members[np.argsort(dist[members], kind="stable")[:count]])
        else:
            picked.append(rng.choice(members, size=int(count), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _write(
    out: Path, settings: SelectSettings, pool: list[_Dataset], labels: np.ndarray, chosen: np.ndarray, embedder: str
) -> dict[str, Any]:
    """The selected public records, as they were, one file per layout; their dataset_info.json entries."""
    layouts: dict[tuple[Any, ...], list[int]] = {}
    for i, d in enumerate(pool):
        layouts.setdefault(_layout(d.resolved), []).append(i)
    where = [(i, j) for i, d in enumerate(pool) for j in range(len(d.records))]
    selected = set(chosen.tolist())
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    datasets: dict[str, Any] = {}
    rows = []
    for g, members in enumerate(layouts.values(), start=1):
        name = settings.name if len(layouts) == 1 else f"{settings.name}_{g}"
        keep = [k for k, (i, _) in enumerate(where) if i in members and k in selected]
        first = pool[members[0]].resolved
        datasets[name] = {
            "file": f"{name}.jsonl" if keep else None,
            "format": first.format,
            "rows": len(keep),
            "public": [pool[i].resolved.name for i in members],
        }
        if not keep:
            log.warning("no sample of %s was selected: %s is not written", datasets[name]["public"], name)
            continue
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for k in keep:
                i, j = where[k]
                f.write(json.dumps(pool[i].records[j], ensure_ascii=False, default=_json_value) + "\n")
                rows.append({"dataset": name, "source": pool[i].sources[j], "cluster": int(labels[k])})
        info[name] = _entry(first, f"{name}.jsonl")
        if first.format_spec.system:
            log.warning("%s: its system prompt is a dataset setting; give `system:` again where you train", name)
    (out / INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {
        "datasets": datasets,
        "settings": {k: v for k, v in asdict(settings).items() if k != "epsilon"},  # epsilon: below
        "embedder": embedder,
        "public_size": len(where),
        "selected": len(chosen),
        "clusters": settings.clusters,
        "rows": rows,
    }


def _json_value(value: Any) -> Any:
    """Parquet values JSON has no type for: dates as ISO text, bytes refused (a column tuneforge cannot train)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise SelectionError(f"a public record holds a {type(value).__name__} value, which JSON cannot hold: {value!r:.60}")


__all__ = [
    "SelectSettings",
    "SelectionError",
    "allocate",
    "calibrate",
    "dataset_spec",
    "gaussian_noise",
    "private_counts",
    "sample_text",
    "select_public",
    "selection_markdown",
]
