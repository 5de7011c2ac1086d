"""The training loop: seeded minibatches, periodic evaluation, a progress bar, metrics as
JSON lines, and checkpoints (``<path>.npz`` + ``<path>.json``) from which a resumed run
continues bit-identically.

Reproducibility: the model and data come from the experiment's seed; the minibatch of step
t is a fixed function of (TrainConfig.batch_seed, t) -- epoch e = t // steps_per_epoch is a
permutation drawn from ``default_rng([batch_seed, e])``, and the last incomplete batch of an
epoch is dropped -- so a checkpoint needs only the parameters, the optimizer state and t.
pynorm's kernels are deterministic whatever the thread count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .models import Experiment, build_experiment
from .optim import OPTIMIZERS, Optimizer, clip_grad_norm, make_schedule

CHECKPOINT_FORMAT = "pynorm.nn checkpoint v1"


@contextlib.contextmanager
def single_blas_thread(pynorm_threads: Optional[int] = None):
    """NumPy's BLAS on one thread for the block (without threadpoolctl, BLAS keeps its own
    count), and pynorm's kernels on ``pynorm_threads`` threads (unchanged if None).

    The trainer's matrix products are small (a few thousand rows by 8-64 columns): BLAS
    threads gain nothing there, and OpenBLAS's spinning threads fight pynorm's OpenMP threads
    for the cores. The experiments' units run with ``pynorm_threads=1`` (many tiny models,
    one per process).
    """
    import pynorm

    previous = pynorm.get_num_threads()
    if pynorm_threads is not None:
        pynorm.set_num_threads(pynorm_threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with the extras
            yield
            return
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        pynorm.set_num_threads(previous)


@dataclass
class TrainConfig:
    """Training hyperparameters (the experiment supplies its own defaults for some).

    optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``; lr: base learning rate; momentum (SGD);
    betas, eps (Adam/AdamW); weight_decay (L2 for SGD/Adam, decoupled for AdamW, which skips
    biases and norm parameters); schedule: ``"constant"``, ``"linear"`` or ``"cosine"`` over
    ``steps`` with ``warmup_steps`` and ``min_lr_factor``; clip_norm: global gradient-norm
    clipping (None: off); eval_every / log_every / checkpoint_every: in steps (0: only at the
    end / never / only at the end when out_dir is set); out_dir: where metrics.jsonl and
    checkpoint files go (None: nowhere); progress: tqdm bar; batch_seed: the batch order.
    """

    steps: int = 1000
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_factor: float = 0.0
    clip_norm: Optional[float] = None
    eval_every: int = 0
    eval_batch_size: int = 2000
    log_every: int = 10
    checkpoint_every: int = 0
    out_dir: Optional[str] = None
    progress: bool = True
    batch_seed: int = 0

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig: unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        for name in ("steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "log_every", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig: {name} must be >= 0, got {getattr(self, name)}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"TrainConfig: clip_norm must be > 0 or None, got {self.clip_norm}")
        make_schedule(self.schedule, self.steps, self.warmup_steps, self.min_lr_factor)  # validates


def make_optimizer(config: TrainConfig, model) -> Optimizer:
    """The optimizer and schedule ``config`` describes, for ``model``."""
    schedule = make_schedule(config.schedule, config.steps, config.warmup_steps, config.min_lr_factor)
    kwargs: Dict[str, Any] = dict(schedule=schedule, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        kwargs["momentum"] = config.momentum
    else:
        kwargs.update(betas=config.betas, eps=config.eps)
    return OPTIMIZERS[config.optimizer](model, config.lr, **kwargs)


class Trainer:
    """Trains an :class:`pynorm.nn.models.Experiment` as ``config`` says.

    Example:
        >>> exp, cfg = build_experiment("power-method", n_train=512, n_test=128, steps=20, progress=False)
        >>> history = Trainer(exp, cfg).fit()
    """

    def __init__(self, experiment: Experiment, config: TrainConfig):
        self.experiment, self.config = experiment, config
        self.model, self.loss = experiment.model, experiment.loss
        self.optimizer = make_optimizer(config, self.model)
        self.n_train = len(experiment.train[experiment.target])
        if config.batch_size > self.n_train:
            raise ValueError(f"Trainer: batch_size {config.batch_size} exceeds the {self.n_train} training samples")
        self.steps_per_epoch = self.n_train // config.batch_size

    @property
    def step(self) -> int:
        """The number of optimizer steps taken so far."""
        return self.optimizer.steps

    # -- one step --------------------------------------------------------------------
    def batch(self, step: int) -> Dict[str, np.ndarray]:
        """The training minibatch of ``step`` (a fixed function of the seed and the step)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.config.batch_seed, epoch]).permutation(self.n_train)
        index = np.sort(order[position * self.config.batch_size : (position + 1) * self.config.batch_size])
        return {k: v[index] for k, v in self.experiment.train.items()}

    def train_step(self, batch: Dict[str, np.ndarray]) -> Dict[str, float]:
        """Forward, backward, clipping and one optimizer step on ``batch``; returns the loss
        (before the update), the learning rate used and, with clipping, the gradient norm."""
        exp = self.experiment
        pred = self.model(*(batch[k] for k in exp.inputs))
        loss = self.loss(pred, batch[exp.target])
        self.model.zero_grad()
        self.model.backward(self.loss.backward())
        record = {"loss": loss, "lr": self.optimizer.current_lr()}
        if self.config.clip_norm is not None:
            record["grad_norm"] = clip_grad_norm(self.model.gradients(), self.config.clip_norm)
        self.optimizer.step()
        return record

    def evaluate(self, split: str = "test") -> Dict[str, float]:
        """The mean loss and metrics over a whole split (``"test"`` or ``"train"``), in batches."""
        exp = self.experiment
        data = getattr(exp, split)
        size = len(data[exp.target])
        totals: Dict[str, float] = {}
        self.model.train(False)
        try:
            for start in range(0, size, self.config.eval_batch_size):
                chunk = {k: v[start : start + self.config.eval_batch_size] for k, v in data.items()}
                pred = self.model(*(chunk[k] for k in exp.inputs))
                weight = len(chunk[exp.target]) / size
                values = {"loss": self.loss(pred, chunk[exp.target])}
                values.update({name: fn(pred, chunk[exp.target]) for name, fn in exp.metrics.items()})
                for name, value in values.items():
                    totals[f"{split}_{name}"] = totals.get(f"{split}_{name}", 0.0) + weight * value
        finally:
            self.model.train(True)
        return totals

    # -- the loop --------------------------------------------------------------------
    def fit(self, steps: Optional[int] = None) -> List[Dict[str, Any]]:
        """Trains until ``steps`` (default: config.steps) optimizer steps have been taken in
        total (a resumed trainer continues from its step). Returns the metric records, which
        also go to ``<out_dir>/metrics.jsonl`` when out_dir is set."""
        cfg = self.config
        end = cfg.steps if steps is None else steps
        history: List[Dict[str, Any]] = []
        log = None
        if cfg.out_dir:
            os.makedirs(cfg.out_dir, exist_ok=True)
            log = open(os.path.join(cfg.out_dir, "metrics.jsonl"), "a")
        bar = _progress_bar(cfg.progress, self.step, end)
        with single_blas_thread():  # see single_blas_thread: small products, no BLAS threads
            try:

                def emit(record):
                    history.append(record)
                    if log:
                        log.write(json.dumps(record) + "\n")
                        log.flush()

                while self.step < end:
                    step = self.step
                    record = self.train_step(self.batch(step))
                    done = self.step
                    if cfg.log_every and (done % cfg.log_every == 0 or done == end):
                        emit({"step": done, "epoch": step / self.steps_per_epoch, **record})
                    if (cfg.eval_every and done % cfg.eval_every == 0) or done == end:
                        emit({"step": done, **self.evaluate()})
                    if cfg.out_dir and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == end):
                        self.save(os.path.join(cfg.out_dir, "checkpoint"))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{record['loss']:.4g}")
            finally:
                if bar is not None:
                    bar.close()
                if log:
                    log.close()
        return history

    # -- checkpoints -----------------------------------------------------------------
    def save(self, path: str) -> Tuple[str, str]:
        """Writes ``<path>.npz`` (parameters, optimizer state) and ``<path>.json`` (experiment,
        configs, step); returns both paths. Files are replaced atomically."""
        exp = self.experiment
        steps, state = self.optimizer.state_dict()
        arrays = {f"param/{k}": v for k, v in self.model.parameters().items()}
        arrays.update({f"optim/{k}": v for k, v in state.items()})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "experiment": exp.name,
            "dtype": exp.dtype.name,
            "step": steps,
            "model_config": dataclasses.asdict(exp.config),
            "train_config": dataclasses.asdict(self.config),
        }
        npz_path, json_path = path + ".npz", path + ".json"
        with open(npz_path + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(npz_path + ".tmp", npz_path)
        with open(json_path + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(json_path + ".tmp", json_path)
        return npz_path, json_path

    @classmethod
    def resume(cls, path: str, **train_overrides: Any) -> "Trainer":
        """A trainer in exactly the state :meth:`save` wrote at ``path`` (without extension).

        ``train_overrides`` may change TrainConfig fields that do not affect the trajectory
        (steps to train to, out_dir, progress, eval/log/checkpoint intervals); the rest must
        stay as saved for the run to continue bit-identically.
        """
        with open(path + ".json") as f:
            meta = json.load(f)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"Trainer.resume: {path}.json is not a {CHECKPOINT_FORMAT!r} file")
        allowed = {"steps", "out_dir", "progress", "eval_every", "log_every", "checkpoint_every", "eval_batch_size"}
        if set(train_overrides) - allowed:
            raise ValueError(
                f"Trainer.resume: only {sorted(allowed)} may change on resume, "
                f"got {sorted(set(train_overrides) - allowed)}"
            )
        train_config = {**meta["train_config"], **train_overrides}
        experiment, config = build_experiment(meta["experiment"], meta["dtype"], **meta["model_config"], **train_config)
        trainer = cls(experiment, config)
        with np.load(path + ".npz") as data:
            trainer.model.load_parameters({k[6:]: data[k] for k in data.files if k.startswith("param/")})
            trainer.optimizer.load_state_dict(
                meta["step"], {k[6:]: data[k] for k in data.files if k.startswith("optim/")}
            )
        return trainer


def _progress_bar(enabled: bool, start: int, end: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency (the "experiments" extra)
        return None
    return tqdm(total=end, initial=start, unit="step", dynamic_ncols=True)
