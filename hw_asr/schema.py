"""The keys a training config may hold, their defaults and their checks, in one place.

The top level (:data:`TOP_KEYS`, :func:`seed`, :func:`sample_rate`), each data split
(:class:`DataSplitConfig`) and the ``trainer`` block (:class:`TrainerConfig`). Validation, the
builder, ``train.py`` and the Trainer all read a config through these, so a default is written once.
The blocks that name a type (``arch``, ``optimizer``, datasets, ...) are checked against the
arguments of the class they name instead (:class:`hw_asr.config.Block`).

A training config resolved once is a :class:`RunSpec` (``hw_asr.builder.validate_config`` makes it):
the parsed trainer block, one :class:`SplitSpec` per split and every block as a checked
:class:`~hw_asr.config.Block`. The training run is assembled from it, never from the dict.
"""

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hw_asr.config import Block, ConfigError, check_known_keys

DEFAULT_SEED = 42
DEFAULT_SAMPLE_RATE = 16000
AMP_MODES = ("fp32", "fp16", "bf16")
VISUALIZE = ("comet", "tensorboard", None, "none")  # trainer.visualize: comet-ml, TensorBoard, or metrics.jsonl only

# the keys a training config may hold at the top ("base" is merged away on loading)
TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "seed",
        "sample_rate",
        "text_encoder",
        "arch",
        "data",
        "augmentations",
        "optimizer",
        "lr_scheduler",
        "loss",
        "metrics",
        "decoders",
        "trainer",
    }
)


def seed(config: Mapping[str, Any]) -> int:
    """The run's seed (``seed``; default 42)."""
    return config.get("seed", DEFAULT_SEED)


def sample_rate(config: Mapping[str, Any]) -> int:
    """The rate every wave is resampled to (``sample_rate``; default 16 kHz)."""
    return config.get("sample_rate", DEFAULT_SAMPLE_RATE)


def _count(least: int, nullable: bool = False) -> dict[str, Any]:
    """Metadata of a whole-number key: its least value, and whether null is allowed."""
    return {"least": least, "nullable": nullable}


def _check_counts(cls: type, values: Mapping[str, Any], where: str) -> None:
    for f in dataclasses.fields(cls):
        if "least" not in f.metadata or f.name not in values:
            continue
        value, least, nullable = values[f.name], f.metadata["least"], f.metadata["nullable"]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(
                f"{where}.{f.name} must be a whole number >= {least}{' or null' if nullable else ''}, got {value!r}"
            )


@dataclass(frozen=True)
class DataSplitConfig:
    """A split under ``data`` (``train``, ``val``, ``test``, ...).

    ``datasets``: dataset blocks, concatenated. ``batch_size`` (or a ``batch_sampler`` block, e.g.
    ``LengthBucketSampler``). ``num_workers``: loader processes, or ``"auto"`` (builder). ``pin_memory``
    (default: when CUDA is available), ``persistent_workers``, ``prefetch_factor``: as torch's DataLoader.
    """

    datasets: list | None = None
    batch_size: int | None = field(default=None, metadata=_count(1, nullable=True))
    batch_sampler: dict | None = None
    num_workers: int | str = 0
    pin_memory: bool | None = None
    persistent_workers: bool = False
    prefetch_factor: int = field(default=2, metadata=_count(1))

    @classmethod
    def from_dict(cls, block: Any, where: str, need_datasets: bool = True) -> "DataSplitConfig":
        """``need_datasets=False``: only the loader's settings are wanted (the dataset is built already)."""
        if not isinstance(block, dict):
            raise ConfigError(f"{where} must be an object")
        check_known_keys(block, {f.name for f in dataclasses.fields(cls)}, where)
        specs = block.get("datasets")
        if need_datasets and (not isinstance(specs, list) or not specs):
            raise ConfigError(f"{where}.datasets must be a non-empty list of dataset blocks")
        if "batch_sampler" not in block and "batch_size" not in block:
            raise ConfigError(f"missing required config key '{where}.batch_size'")
        _check_counts(cls, block, where)
        return cls(**block)


@dataclass(frozen=True)
class TrainerConfig:
    """The ``trainer`` block.

    Length: ``epochs`` (required); ``len_epoch`` batches per epoch (null or 0: one pass over the loader);
    ``grad_accum_steps`` batches per optimiser step. Logging: ``log_step`` (optimiser steps between train
    logs), ``media_step`` (the spectrogram, audio and predictions sent to comet or TensorBoard at the first
    log step of every ``media_step`` steps; default 10 x ``log_step``; 0 or null: never),
    ``max_predictions_logged``, ``visualize`` ("comet", "tensorboard" or null), ``project_name``.
    Optimisation: ``grad_norm_clip`` (null: none),
    ``amp`` (fp32 | fp16 | bf16, CUDA only), ``tf32`` (null: torch's default), ``compile`` (false, true,
    a backend name or torch.compile arguments), ``sync_batchnorm``, ``max_nonfinite_steps`` (skipped
    steps in a row before the run stops; 0 or null: never). Checkpoints: ``save_dir``, ``run_name``,
    ``save_period`` (epochs), ``keep_last`` (periodic checkpoints kept; 0 or null: all), ``monitor``
    ("off" or "min|max <split>_<metric>"), ``early_stop`` (epochs without improvement; 0 or null: never),
    ``init_weights`` (a checkpoint whose matching weights start the run). Start: ``head_prior`` (a new run's
    CTC output bias starts at the log of the blank plateau's output distribution, estimated from the training
    split: see :mod:`hw_asr.model.output_prior`; default false). Time: ``time_budget_s`` (wall-clock
    seconds of training, evaluations included, over all resumes: a schedule planned over the run keeps up
    with the clock on a slow machine, and the run stops with an evaluation and a checkpoint when the
    budget is spent; null: no budget). Evaluation: ``beam_subset``
    (utterances the beam decoders see at validation; null: all). Machine: ``device`` (auto, cpu, cuda,
    cuda:N), ``keep_freed_memory`` (CPU allocator setting; null: on for the CPU).
    """

    epochs: int = field(metadata=_count(1))
    len_epoch: int | None = field(default=None, metadata=_count(0, nullable=True))
    log_step: int = field(default=50, metadata=_count(1))
    media_step: int | None = field(default=None, metadata=_count(0, nullable=True))
    grad_accum_steps: int = field(default=1, metadata=_count(1))
    save_period: int = field(default=1, metadata=_count(1))
    keep_last: int | None = field(default=3, metadata=_count(0, nullable=True))
    max_nonfinite_steps: int | None = field(default=25, metadata=_count(0, nullable=True))
    early_stop: int | None = field(default=None, metadata=_count(0, nullable=True))
    max_predictions_logged: int = field(default=10, metadata=_count(0))
    beam_subset: int | None = field(default=None, metadata=_count(0, nullable=True))
    grad_norm_clip: float | None = None
    time_budget_s: float | None = None
    amp: str = "fp32"
    monitor: str | None = "off"
    device: str = "auto"
    init_weights: str | None = None
    head_prior: bool = False
    sync_batchnorm: bool = False
    compile: bool | str | dict = False
    tf32: bool | None = None
    visualize: str | None = "comet"
    project_name: str = "hw_asr"
    save_dir: str = "checkpoints"
    run_name: str | None = None
    keep_freed_memory: bool | None = None

    @classmethod
    def from_dict(cls, block: Any, where: str = "trainer") -> "TrainerConfig":
        """Refuse a block whose keys, counts, clipping, precision or monitor cannot work, naming the key:
        at start-up, not at the first logging step or the end of an epoch."""
        if not isinstance(block, dict):
            raise ConfigError(f"{where} must be an object")
        check_known_keys(block, {f.name for f in dataclasses.fields(cls)}, where)
        if "epochs" not in block:
            raise ConfigError(f"missing required config key '{where}.epochs'")
        _check_counts(cls, block, where)
        clip = block.get("grad_norm_clip")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
            raise ConfigError(f"{where}.grad_norm_clip must be a positive number or null (no clipping), got {clip!r}")
        budget = block.get("time_budget_s")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
            raise ConfigError(f"{where}.time_budget_s must be a positive number of seconds or null, got {budget!r}")
        if block.get("amp", "fp32") not in AMP_MODES:
            raise ConfigError(f"{where}.amp must be one of {AMP_MODES}, got {block['amp']!r}")
        if block.get("visualize", "comet") not in VISUALIZE:
            raise ConfigError(
                f'{where}.visualize must be "comet", "tensorboard" or null (metrics.jsonl only), '
                f"got {block['visualize']!r}"
            )
        parse_monitor(block.get("monitor", "off"))
        values = dict(block)
        if "media_step" not in values:
            values["media_step"] = 10 * values.get("log_step", cls.log_step)
        return cls(**values)

    def steps_per_epoch(self, loader_batches: int) -> int:
        """Batches in an epoch: ``len_epoch``, or one pass over a loader of ``loader_batches``."""
        return self.len_epoch or loader_batches

    def total_steps(self, loader_batches: int) -> int:
        """Optimiser steps in the whole run (what a schedule planned over the run is built for)."""
        return self.epochs * self.steps_per_epoch(loader_batches) // self.grad_accum_steps


def parse_monitor(monitor: str | None) -> tuple[str, str | None]:
    """``"min val_WER (argmax)"`` -> ``("min", "val_WER (argmax)")``; ``"off"`` -> ``("off", None)``."""
    if monitor in (None, "off"):
        return "off", None
    if not isinstance(monitor, str):
        raise ConfigError(f"trainer.monitor must be 'off' or 'min|max <split>_<metric>', got {monitor!r}")
    mode, _, key = monitor.partition(" ")
    if mode not in ("min", "max") or not key:
        raise ConfigError(f"trainer.monitor must be 'off' or 'min|max <split>_<metric>', got {monitor!r}")
    return mode, key


@dataclass(frozen=True)
class SplitSpec:
    """A checked split: its loader settings, its dataset blocks and its batch sampler (None: batches of
    ``loader.batch_size``, shuffled in training)."""

    name: str
    loader: DataSplitConfig
    datasets: tuple[Block, ...]
    batch_sampler: Block | None


@dataclass(frozen=True)
class RunSpec:
    """A training config, checked and resolved once: what the run is built from.

    ``config`` gives the config itself (a fresh dict each time: the one written to ``config.json`` and into
    every checkpoint); everything else is typed. Made by :func:`hw_asr.builder.validate_config`."""

    config_json: str
    name: str
    seed: int
    sample_rate: int
    trainer: TrainerConfig
    text_encoder: Block
    arch: Block
    loss: Block
    optimizer: Block
    lr_scheduler: Block | None
    metrics: tuple[Block, ...]
    decoders: Mapping[str, Block]
    wave_augs: tuple[Block, ...]
    splits: Mapping[str, SplitSpec]

    @property
    def config(self) -> dict[str, Any]:
        """The config as JSON data (a copy: changing it changes nothing of the spec)."""
        return json.loads(self.config_json)

    def eval_splits(self) -> list[str]:
        """The splits evaluated after every epoch: all but ``train``."""
        return [s for s in self.splits if s != "train"]
