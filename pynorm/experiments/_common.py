"""Helpers shared by the experiments: their configs' presets, resumable training with a trace,
slope fits, verdicts, figure saving, thread limits, progress bars and capturing a model's norm
inputs/outputs.

Resuming: :func:`train_with_trace` runs :class:`pynorm.nn.Trainer` in chunks with
``out_dir=run_dir``, so the trainer writes ``run_dir/checkpoint.{npz,json}`` and
``run_dir/metrics.jsonl`` after every chunk; the trace (one record per chunk) goes to
``run_dir/trace.jsonl``. Running the same experiment again into the same folder loads the
checkpoint (if its model and training configs are the ones asked for; otherwise it starts
afresh) and continues from its step; a finished run is not trained again, only re-evaluated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, ClassVar, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from pynorm.nn import Trainer, TrainConfig
from pynorm.nn.models import Experiment, canonical_name
from pynorm.nn.train import single_blas_thread

from ._report import to_jsonable


class Presets:
    """Base of the experiments' ``Config`` dataclasses: ``full()`` is the defaults (the paper's
    settings), ``quick()`` the defaults with the fields in ``QUICK`` replaced and ``tiny()``
    those with ``TINY`` (only where the Config sets it). ``QUICK`` and ``TINY`` are ClassVars,
    so they are not config fields (nor in ``dataclasses.asdict``)."""

    QUICK: ClassVar[Dict[str, Any]]
    TINY: ClassVar[Dict[str, Any]]

    @classmethod
    def full(cls):
        """The paper's settings: the defaults."""
        return cls()

    @classmethod
    def quick(cls):
        """Minutes on 2 CPU cores, still showing the qualitative result."""
        return cls(**cls.QUICK)

    @classmethod
    def tiny(cls):
        """For the tests: seconds."""
        return cls(**cls.TINY)


#: TrainConfig fields that may differ between a checkpoint and a resumed run.
RESUMABLE_FIELDS = {"steps", "out_dir", "progress", "eval_every", "log_every", "checkpoint_every", "eval_batch_size"}


def chunk_points(steps: int, n_log: int = 40, max_chunk: Optional[int] = None, first: int = 10) -> List[int]:
    """Steps at which to stop, record and checkpoint: ~n_log points spaced geometrically from
    ``first`` to ``steps`` (good for log-log fits), plus enough points that no chunk is longer
    than ``max_chunk`` steps."""
    points = set(np.unique(np.geomspace(min(first, steps), steps, n_log).astype(int)).tolist())
    if max_chunk:
        points.update(range(max_chunk, steps, max_chunk))
    points.add(steps)
    return sorted(p for p in points if 1 <= p <= steps)


def _configs_match(meta: Dict[str, Any], experiment: Experiment, config: TrainConfig) -> bool:
    model_now = json.loads(json.dumps(to_jsonable(dataclasses.asdict(experiment.config))))
    train_now = json.loads(json.dumps(to_jsonable(dataclasses.asdict(config))))
    train_saved = dict(meta.get("train_config", {}))
    for key in RESUMABLE_FIELDS:
        train_now.pop(key, None)
        train_saved.pop(key, None)
    return (
        canonical_name(meta.get("experiment", "")) == canonical_name(experiment.name)
        and meta.get("model_config") == model_now
        and train_saved == train_now
        and meta.get("dtype") == experiment.dtype.name
    )


def try_resume(trainer: Trainer, path: pathlib.Path) -> bool:
    """Loads ``<path>.npz/.json`` into ``trainer`` if it was written for the same experiment
    and configs; returns whether it did. (Like :meth:`Trainer.resume`, but for experiments
    built outside the pynorm.nn registry.)"""
    json_path, npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
    if not (json_path.is_file() and npz_path.is_file()):
        return False
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return False
    if not _configs_match(meta, trainer.experiment, trainer.config) or meta["step"] > trainer.config.steps:
        return False
    with np.load(npz_path) as data:
        trainer.model.load_parameters({k[6:]: data[k] for k in data.files if k.startswith("param/")})
        trainer.optimizer.load_state_dict(meta["step"], {k[6:]: data[k] for k in data.files if k.startswith("optim/")})
    return True


def train_with_trace(
    experiment: Experiment,
    config: TrainConfig,
    run_dir: pathlib.Path,
    points: Sequence[int],
    record: Callable[[Trainer], Dict[str, Any]],
    progress: bool = True,
    desc: str = "training",
) -> tuple:
    """Trains ``experiment`` to ``config.steps``, stopping at ``points`` to append
    ``{"step", "train_loss" (mean minibatch loss of the chunk), "test_loss", **record(trainer)}``
    to the trace. Resumable (see the module doc). Returns (trainer, trace records)."""
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, out_dir=str(run_dir), progress=False, eval_every=0, checkpoint_every=0)
    trainer = Trainer(experiment, config)
    trace_path = run_dir / "trace.jsonl"
    trace: List[Dict[str, Any]] = []
    if try_resume(trainer, run_dir / "checkpoint"):
        if trace_path.is_file():
            trace = [r for r in map(json.loads, trace_path.read_text().splitlines()) if r["step"] <= trainer.step]
    else:  # fresh start: drop stale files of another configuration
        for name in ("checkpoint.npz", "checkpoint.json", "metrics.jsonl", "trace.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    if not trace or trace[-1]["step"] != trainer.step:  # the state we start from (step 0, or a checkpoint)
        trace.append({"step": trainer.step, "train_loss": None, **trainer.evaluate(), **record(trainer)})
    _write_trace(trace_path, trace)
    bar = progress_bar(progress, config.steps, desc)
    bar.update(trainer.step)
    try:
        for point in points:
            if point <= trainer.step:
                continue
            start = trainer.step
            history = trainer.fit(point)
            losses = [h["loss"] for h in history if "loss" in h]
            test = [h for h in history if "test_loss" in h][-1]
            entry = {
                "step": trainer.step,
                "train_loss": float(np.mean(losses)) if losses else None,
                **{k: v for k, v in test.items() if k != "step"},
                **record(trainer),
            }
            trace.append(to_jsonable(entry))
            with open(trace_path, "a") as f:
                f.write(json.dumps(trace[-1]) + "\n")
            bar.update(trainer.step - start)
            bar.set_postfix(test_loss=f"{entry['test_loss']:.4g}")
    finally:
        bar.close()
    return trainer, trace


def _write_trace(path: pathlib.Path, trace: Iterable[Dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(to_jsonable(r)) + "\n" for r in trace))
    tmp.replace(path)


# -- analysis -----------------------------------------------------------------------------
def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (positive entries only; NaN if < 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def verdict_within(value: float, target: float, good: float, partial: float) -> str:
    """ "reproduced" if |value - target| <= good, "partial" if <= partial, else "not reproduced"."""
    if value is None or not np.isfinite(value):
        return "not reproduced"
    gap = abs(value - target)
    return "reproduced" if gap <= good else "partial" if gap <= partial else "not reproduced"


def comparison(name: str, ours: Any, paper: Any, verdict: str, note: str = "") -> Dict[str, Any]:
    """One entry of run()'s "comparisons" list."""
    return {"name": name, "ours": ours, "paper": paper, "verdict": verdict, "note": note}


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir: pathlib.Path, name: str) -> str:
    """Saves ``fig`` as ``out_dir/name`` (PNG), closes it and returns ``name``."""
    fig.savefig(pathlib.Path(out_dir) / name, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return name


# -- shared by the P2/P3 experiments -------------------------------------------------------


def seconds_per_step(step: Callable[[], Any], timed: int = 3) -> float:
    """Seconds one training step takes here, for run-time estimates: the median of ``timed``
    calls of ``step()`` after a warm-up call, with one pynorm and one BLAS thread, as units
    run (_fanout)."""
    seconds = []
    with single_blas_thread(pynorm_threads=1):
        step()
        for _ in range(timed):
            started = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def trainer_step(experiment: Experiment, config: TrainConfig) -> Callable[[], None]:
    """For :func:`seconds_per_step`: one :class:`pynorm.nn.Trainer` step of ``experiment``."""
    trainer = Trainer(experiment, dataclasses.replace(config, out_dir=None, progress=False, eval_every=0))
    return lambda: trainer.train_step(trainer.batch(trainer.step))


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar (or a no-op stand-in when disabled or tqdm is missing)."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:  # pragma: no cover
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def capture_norms(model, kinds: Tuple[type, ...]) -> Iterator[List[Tuple[str, List]]]:
    """Records (input, output) of every sub-module of a type in ``kinds`` during forwards.

    Yields a list of (dotted name, records) in model order; ``records`` gets one
    (input, output) pair per call. The instances' ``forward`` is wrapped only inside the
    ``with`` block.
    """
    found = [(name.rstrip("."), m) for name, m in model.modules() if isinstance(m, kinds)]
    log: List[Tuple[str, List]] = [(name, []) for name, _ in found]
    for (name, module), (_, records) in zip(found, log):
        original = module.forward

        def wrapped(x, _original=original, _records=records):
            y = _original(x)
            _records.append((np.array(x), np.array(y)))
            return y

        module.forward = wrapped
    try:
        yield log
    finally:
        for _, module in found:
            del module.forward


def mean_or_none(values: List) -> object:
    """The mean of the non-None values (None if there are none)."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
