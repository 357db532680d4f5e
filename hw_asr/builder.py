"""From a resolved config to objects: text encoder, datasets, loaders, model, metrics, optimiser."""

import functools
import inspect
import json
import logging
import os
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from hw_asr import augmentations, batch_sampler, datasets, loss, lr_schedulers, metric, model, text_encoder
from hw_asr.checkpoint import check_checkpoint, load_checkpoint
from hw_asr.collate_fn import collate_fn
from hw_asr.config import (
    Block,
    ConfigError,
    check_argument_names,
    check_known_keys,
    get_path,
    lookup,
    registry_names,
)
from hw_asr.model import frontend as frontends
from hw_asr.model.frontend import STFTFrontend
from hw_asr.model.spec_augment import SpecAugment
from hw_asr.schema import TOP_KEYS, DataSplitConfig, RunSpec, SplitSpec, TrainerConfig
from hw_asr.schema import sample_rate as config_sample_rate
from hw_asr.schema import seed as config_seed
from hw_asr.text_encoder import decoders as decoder_registry
from hw_asr.text_encoder.base import BaseTextEncoder

logger = logging.getLogger(__name__)

TRAIN_SPLIT = "train"

# what a builder takes: the checked RunSpec (training) or a config dict (tools, tests, a checkpoint's config)
Config = RunSpec | Mapping[str, Any]


def _class_registry(name: str, modules: Iterable[types.ModuleType], base: type) -> types.ModuleType:
    """A registry of the public subclasses of ``base`` in ``modules`` (``base`` itself left out), so that an
    unknown name lists optimisers only, not torch.optim's submodules and base classes."""
    registry = types.ModuleType(name)
    registry.__all__ = []
    for module in modules:
        for key in registry_names(module):
            value = getattr(module, key)
            if inspect.isclass(value) and issubclass(value, base) and value is not base and key not in registry.__all__:
                setattr(registry, key, value)
                registry.__all__.append(key)
    return registry


OPTIMIZERS = _class_registry("torch.optim", [torch.optim], torch.optim.Optimizer)
FRONTENDS = _class_registry("hw_asr.model.frontend", [frontends], STFTFrontend)
LR_SCHEDULERS = _class_registry(
    "hw_asr.lr_schedulers, torch.optim.lr_scheduler",
    [lr_schedulers, torch.optim.lr_scheduler],
    torch.optim.lr_scheduler.LRScheduler,
)


DEFAULT_TEXT_ENCODER = {"type": "CTCCharTextEncoder", "args": {}}
DEFAULT_LOSS = {"type": "CTCLoss", "args": {}}
DEFAULT_METRICS = [{"type": "WERMetric", "args": {}}, {"type": "CERMetric", "args": {}}]

# Every builder takes a RunSpec (the training path: the config resolved once by validate_config) or a config
# dict (tools, tests, a checkpoint's config), whose part it needs is then read here, with the same checks.


def _read_text_encoder(config: Mapping[str, Any]) -> Block:
    return Block.of(config.get("text_encoder", DEFAULT_TEXT_ENCODER), text_encoder, "text_encoder")


def _read_arch(config: Mapping[str, Any]) -> Block:
    block = Block.of(get_path(config, "arch"), model, "arch")
    check_model_parts(block.args, "arch.args")
    return block


def _read_loss(config: Mapping[str, Any]) -> Block:
    return Block.of(config.get("loss", DEFAULT_LOSS), loss, "loss")


def _read_optimizer(config: Mapping[str, Any]) -> Block:
    return Block.of(get_path(config, "optimizer"), OPTIMIZERS, "optimizer")


def _read_lr_scheduler(config: Mapping[str, Any]) -> Block | None:
    spec = config.get("lr_scheduler")
    return Block.of(spec, [LR_SCHEDULERS], "lr_scheduler") if spec else None


def _read_metrics(config: Mapping[str, Any]) -> tuple[Block, ...]:
    return tuple(Block.of(s, metric, f"metrics.{i}") for i, s in enumerate(config.get("metrics", DEFAULT_METRICS)))


def _read_decoders(config: Mapping[str, Any]) -> dict[str, Block]:
    return {
        name: Block.of(spec, decoder_registry, f"decoders.{name}")
        for name, spec in (config.get("decoders") or {}).items()
    }


def _read_wave_augs(config: Mapping[str, Any]) -> tuple[Block, ...]:
    specs = get_path(config, "augmentations.wave", [])
    return tuple(Block.of(s, augmentations, f"augmentations.wave.{i}", nested=True) for i, s in enumerate(specs))


def _read_datasets(config: Mapping[str, Any], split: str) -> tuple[Block, ...]:
    specs = get_path(config, f"data.{split}.datasets")
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"data.{split}.datasets must be a non-empty list of dataset blocks")
    return tuple(Block.of(s, datasets, f"data.{split}.datasets.{i}") for i, s in enumerate(specs))


_READERS = {
    "text_encoder": _read_text_encoder,
    "arch": _read_arch,
    "loss": _read_loss,
    "optimizer": _read_optimizer,
    "lr_scheduler": _read_lr_scheduler,
    "metrics": _read_metrics,
    "decoders": _read_decoders,
    "wave_augs": _read_wave_augs,
}


def _part(config: Config, name: str) -> Any:
    """The ``name`` part of a run: the spec's, or read from a config dict now."""
    return getattr(config, name) if isinstance(config, RunSpec) else _READERS[name](config)


def _sample_rate(config: Config) -> int:
    return config.sample_rate if isinstance(config, RunSpec) else config_sample_rate(config)


def build_text_encoder(config: Config) -> BaseTextEncoder:
    return _part(config, "text_encoder").build()


def _build_augmentation(block: Block, sample_rate: int) -> Callable:
    """An augmentation block, the blocks nested in its arguments built first (``RandomApply``'s
    ``augmentation``, ``Sequential``'s list); ``sample_rate`` goes to those that take one."""
    nested = {}
    for key, value in block.args.items():
        if isinstance(value, Block):
            nested[key] = _build_augmentation(value, sample_rate)
        elif isinstance(value, list) and value and all(isinstance(v, Block) for v in value):
            nested[key] = [_build_augmentation(v, sample_rate) for v in value]
    needs_rate = "sample_rate" in inspect.signature(block.cls).parameters
    return block.without(*nested).build(**nested, **({"sample_rate": sample_rate} if needs_rate else {}))


def build_wave_augs(config: Config) -> Callable | None:
    blocks = _part(config, "wave_augs")
    if not blocks:
        return None
    augs = [_build_augmentation(b, _sample_rate(config)) for b in blocks]
    return augs[0] if len(augs) == 1 else augmentations.Sequential(augs)


def build_dataset(config: Config, split: str, encoder: BaseTextEncoder | None, train: bool | None = None) -> Dataset:
    """All datasets of a split, concatenated. ``train`` (default: whether ``split`` is the train split)
    gives the wave augmentations, and a file that fails to decode is replaced by the next one (an
    epoch never dies on one file); otherwise such a file is left out and reported, never substituted."""
    blocks = config.splits[split].datasets if isinstance(config, RunSpec) else _read_datasets(config, split)
    train = split == TRAIN_SPLIT if train is None else train
    wave_augs = build_wave_augs(config) if train else None
    sample_rate = _sample_rate(config)
    parts = [b.build(text_encoder=encoder, sample_rate=sample_rate, wave_augs=wave_augs) for b in blocks]
    streamed = [i for i, p in enumerate(parts) if getattr(p, "streaming", False)]
    if streamed and (len(parts) > 1 or not train):
        raise ConfigError(
            f"data.{split}.datasets.{streamed[0]} ({parts[streamed[0]].describe()}) is streamed from shards: "
            + (
                "it trains alone (give several folders in its shar_dir instead of several datasets)"
                if train
                else "streams are for training; evaluate with a manifest or a corpus folder"
            )
        )
    for i, p in enumerate(parts):
        if len(p) == 0:
            raise ConfigError(f"data.{split}.datasets.{i} ({p.describe()}) has no usable utterances")
        p.replace_failed_files = train
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def resolve_num_workers(value: int | str, where: str) -> int:
    """``num_workers``: a count, or ``"auto"``: none when this process has 4 CPU cores or fewer
    (a worker then takes cycles from the compute threads: 14-27% of a Conformer step on
    2 cores, BENCHMARKS.md), otherwise half of the process's cores, at most 8. Cores are those
    the process may run on, shared among the ranks torchrun starts on this machine."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        return 0 if cores <= 4 else min(8, cores // 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f'{where} must be a non-negative integer or "auto", got {value!r}')
    return value


def build_dataloader(
    config: Config, split: str, dataset: Dataset, seed: int = 0, train: bool | None = None
) -> DataLoader:
    """``train`` (default: whether ``split`` is the train split) shuffles the batches."""
    if isinstance(config, RunSpec):
        cfg, block = config.splits[split].loader, config.splits[split].batch_sampler
    else:
        cfg = DataSplitConfig.from_dict(get_path(config, f"data.{split}"), f"data.{split}", need_datasets=False)
        block = Block.of(cfg.batch_sampler, batch_sampler, f"data.{split}.batch_sampler") if cfg.batch_sampler else None
    train = split == TRAIN_SPLIT if train is None else train
    if block is None:
        block = Block.of(
            {
                "type": "RandomBatchSampler",
                "args": {"batch_size": cfg.batch_size, "shuffle": train, "drop_last": False},
            },
            batch_sampler,
            f"data.{split}.batch_sampler",
        )
    sampler_args = {} if "seed" in block.args else {"seed": seed}
    if getattr(dataset, "streaming", False) != getattr(block.cls, "streams", False):
        raise ConfigError(
            f"data.{split}: {type(dataset).__name__} is "
            + (
                "streamed from shards: give it a batch_sampler of type StreamBucketSampler"
                if getattr(dataset, "streaming", False)
                else f"not streamed: {block.type_name} batches only a streamed dataset such as SharDataset"
            )
        )
    sampler = block.build(dataset, **sampler_args)
    num_workers = resolve_num_workers(cfg.num_workers, f"data.{split}.num_workers")
    if getattr(sampler, "streams", False):
        return stream_loader(config, split, sampler, num_workers, seed, cfg)
    # A loader of its own generator: creating an iterator then draws no number from the
    # global RNG, so validation and resumes leave the training random stream unchanged.
    grid = getattr(sampler, "length_grid", None)
    collate = functools.partial(collate_fn, length_grid=grid, sample_rate=_sample_rate(config)) if grid else collate_fn
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and num_workers > 0,
        prefetch_factor=cfg.prefetch_factor if num_workers > 0 else None,
    )
    return loader


def stream_loader(
    config: Config, split: str, sampler: Any, num_workers: int, seed: int, cfg: DataSplitConfig
) -> DataLoader:
    """The loader of a streamed split: the sampler yields whole batches (lists of items), read by
    ``num_workers`` workers each from shards of its own; persistent workers would not see ``set_epoch``."""
    shards, need = len(sampler.dataset.shards), sampler.world_size * max(num_workers, 1)
    if shards < need:
        raise ConfigError(
            f"data.{split}: {sampler.dataset.describe()} has {shards} shard(s); {sampler.world_size} process(es) "
            f"x {max(num_workers, 1)} loader worker(s) need at least {need}, one per reader. Lower "
            f"data.{split}.num_workers or export the data again with a smaller --shard-size"
        )
    sampler.num_workers = num_workers
    grid = sampler.length_grid
    return DataLoader(
        sampler,
        batch_size=None,
        collate_fn=functools.partial(collate_fn, length_grid=grid, sample_rate=_sample_rate(config)),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory,
        prefetch_factor=cfg.prefetch_factor if num_workers > 0 else None,
    )


def check_batches(config: Config, split: str, loader: DataLoader, world_size: int = 1) -> None:
    """Refuse a split that gives this process no batch: an epoch of it would never end. Under torchrun
    every rank needs a batch of its own, and training drops an incomplete global batch."""
    if len(loader) > 0:
        return
    n = len(loader.dataset)
    sampler = loader.batch_sampler
    if sampler is None:  # a stream: the loader's dataset is its sampler
        stream = loader.dataset
        unit = f"{stream.max_batch_seconds} s" if stream.batch_size is None else f"{stream.batch_size} utterances"
        raise ConfigError(
            f"data.{split} gives no batch to each of {world_size} process(es): {stream.dataset.describe()} "
            f"({stream.dataset.utterances} utterances, {stream.dataset.seconds / 3600:.2f} h) makes no batch of "
            f"{unit} per process. Lower data.{split}.batch_sampler.args.max_batch_seconds (or batch_size), add "
            f"data, or run fewer processes"
        )
    per_rank = getattr(sampler, "batch_size", None)
    procs = f"{world_size} process{'es' * (world_size > 1)}"
    if getattr(sampler, "max_batch_seconds", None) is not None:
        made = len(sampler.all_batches())
        raise ConfigError(
            f"data.{split} gives no batch to each of {procs}: its {n} utterances make {made} batch(es) of at most "
            f"{sampler.max_batch_seconds} s, and every process needs at least one. Lower "
            f"data.{split}.batch_sampler.args.max_batch_seconds, add data, or run fewer processes"
        )
    if per_rank is not None:
        raise ConfigError(
            f"data.{split} gives no batch to each of {procs}: it has {n} utterances, fewer than one global batch of "
            f"{per_rank} x {world_size} = {per_rank * world_size} (an incomplete global batch is dropped in "
            f"training). Set data.{split}.batch_size to at most {max(1, n // world_size)}, add data, or run "
            f"fewer processes"
        )
    raise ConfigError(f"data.{split} gives no batch to this process ({n} utterances, {procs})")


def frontend_class_and_args(
    args: Mapping[str, Any], where: str = "arch.args.frontend"
) -> tuple[type, Mapping[str, Any], str]:
    """The model's ``frontend`` setting: a block ``{"type": "SpectrogramFrontend", "args": {...}}``, or the
    arguments of a ``LogMelFrontend`` alone (``{"n_mels": 80}``, the short form). Returns the class, its
    arguments and where they are in the config; unknown types and argument names are errors."""
    spec = args.get("frontend") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be an object, got {spec!r}")
    if "type" not in spec:
        cls, frontend_args, at = frontends.LogMelFrontend, spec, where
    else:
        cls, frontend_args, at = (
            lookup(spec["type"], [FRONTENDS], f"{where}.type"),
            spec.get("args") or {},
            f"{where}.args",
        )
    check_argument_names(cls, frontend_args, at, cls.__name__)
    return cls, frontend_args, at


def spec_augment_args(args: Mapping[str, Any], where: str = "arch.args.spec_augment") -> dict[str, Any] | None:
    """The model's ``spec_augment`` arguments, checked against SpecAugment's (None or {}: none)."""
    augment = args.get("spec_augment")
    if isinstance(augment, dict):
        check_argument_names(SpecAugment, augment, where, "SpecAugment")
    return augment


def check_model_parts(args: Mapping[str, Any], where: str = "arch.args") -> None:
    """The frontend and SpecAugment settings name only arguments those take: a config check, before
    anything is built."""
    frontend_class_and_args(args, f"{where}.frontend")
    spec_augment_args(args, f"{where}.spec_augment")


def build_model(config: Config, n_tokens: int) -> torch.nn.Module:
    """The model of ``arch``, assembled: the builder builds the frontend (at the config's ``sample_rate``
    unless the frontend names its own) and SpecAugment and passes them in; the model knows no config."""
    block = _part(config, "arch")
    try:
        cls, frontend_args, _ = frontend_class_and_args(block.args)
        frontend = cls(**{"sample_rate": _sample_rate(config), **frontend_args})
        augment = spec_augment_args(block.args)
        return block.without("frontend", "spec_augment").build(
            n_tokens=n_tokens, frontend=frontend, spec_augment=SpecAugment(**augment) if augment else None
        )
    except ConfigError:
        raise
    except ValueError as e:  # an argument's value the model refuses (pos_encoding, dim vs heads, ...)
        raise ConfigError(f"arch.args ({block.type_name}): {e}") from None


def load_model(
    checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu", state: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, BaseTextEncoder, dict[str, Any]]:
    """Model (in eval mode, on ``device``), text encoder and config from a checkpoint, or from its
    already loaded ``state``."""
    state = load_checkpoint(checkpoint_path) if state is None else check_checkpoint(state, checkpoint_path)
    encoder = text_encoder.text_encoder_from_state(state["text_encoder"])
    net = build_model(state["config"], n_tokens=len(encoder))
    net.load_state_dict(state["model"])
    return net.to(device).eval(), encoder, state["config"]


def build_loss(config: Config) -> torch.nn.Module:
    return _part(config, "loss").build()


def build_metrics(config: Config) -> list:
    return [b.build() for b in _part(config, "metrics")]


def build_decoders(config: Config, encoder: BaseTextEncoder, names: Iterable[str] | None = None) -> dict[str, Any]:
    """``{"argmax": None, name: decoder, ...}`` from the config's ``decoders`` block
    (only ``names`` when given; ``argmax`` is always there)."""
    blocks = _part(config, "decoders")
    wanted = set(blocks) if names is None else set(names) - {"argmax"}
    missing = wanted - set(blocks)
    if missing:
        raise ConfigError(
            f"decoder(s) {sorted(missing)} are used but not defined under 'decoders' "
            f"(defined: {sorted(blocks) or 'none'}; 'argmax' needs no definition)"
        )
    out = {"argmax": None}
    for name in sorted(wanted):
        if not isinstance(config, RunSpec):  # a spec's files were checked when it was resolved
            check_decoder_files(config["decoders"][name], f"decoders.{name}")
        out[name] = blocks[name].build(encoder)
    return out


def lm_hint(path: str | os.PathLike) -> str:
    """How to get a missing language-model file: the command that builds or downloads it."""
    name = Path(path).name
    if name.startswith("librispeech_"):
        return "./download_artifacts.sh downloads and prepares LibriSpeech's n-gram LMs into data/lm/"
    return (
        "build one with python -m hw_asr.tools.make_lm_corpus (a text corpus) and python -m "
        "hw_asr.tools.build_lm (README, 'Language models'), or ./download_artifacts.sh for LibriSpeech's LMs"
    )


def check_decoder_files(spec: Any, where: str) -> None:
    """The files a decoder block names exist: the KenLM model (``lm_path``, or ``lm`` of the prefix beam
    search), the unigram list, and the word list a lexicon decoder reads beside a binary LM. A missing one
    is named with the command that makes it, before any model runs (not a kenlm traceback mid-test)."""
    if not isinstance(spec, dict):
        return
    args = spec.get("args") or {}
    kind = spec.get("type")
    if kind == "NBestRescoringDecoder":
        check_decoder_files(args.get("decoder"), f"{where}.args.decoder")
        lm = args.get("lm_path")
        if isinstance(lm, str) and not Path(lm).is_dir():
            raise ConfigError(
                f"{where}.args.lm_path: no such folder: {lm} (a local Hugging Face causal LM: a "
                f"folder with config.json, the weights and the tokenizer)"
            )
        return
    for key in ("lm_path", "lm", "unigrams_path"):
        path = args.get(key)
        if isinstance(path, str) and not Path(path).is_file():
            raise ConfigError(f"{where}.args.{key}: file not found: {path}; {lm_hint(path)}")
    lm = args.get("lm_path")
    if kind == "FlashlightDecoder" and isinstance(lm, str) and not args.get("lexicon_words"):
        unigrams = Path(lm.rsplit(".", 1)[0] + ".unigrams.txt")
        if not lm.endswith(".arpa") and not unigrams.is_file():
            raise ConfigError(
                f"{where}: the lexicon decoder needs the LM's words: {unigrams} beside {lm} is "
                f"missing (build_lm and download_artifacts.sh write it), or give lexicon_words"
            )


# optimisers with a fused kernel on the CPU and CUDA: the whole update in one kernel per parameter group
# (3x faster than torch's default for Conformer-S on 2 CPU cores, BENCHMARKS.md), and an update it can
# skip on a device flag, so a non-finite step needs no host read (Trainer._optimizer_step)
FUSED_BY_DEFAULT = ("Adam", "AdamW", "SGD")


def build_optimizer(config: Config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The ``optimizer`` block; Adam, AdamW and SGD are fused unless the block sets ``fused`` or ``foreach``."""
    block = _part(config, "optimizer")
    if block.type_name in FUSED_BY_DEFAULT and not {"fused", "foreach"} & set(block.args):
        block = block.with_args(fused=True)
    return block.build(params)


def build_lr_scheduler(
    config: Config, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    block = _part(config, "lr_scheduler")
    if block is None:
        return None
    if block.cls is torch.optim.lr_scheduler.OneCycleLR and not {"total_steps", "epochs"} & set(block.args):
        block = block.with_args(total_steps=total_steps)
    if getattr(block.cls, "needs_total_steps", False) and "total_steps" not in block.args:
        block = block.with_args(total_steps=total_steps)
    return block.build(optimizer)


def eval_splits(config: Config) -> list[str]:
    if isinstance(config, RunSpec):
        return config.eval_splits()
    return [s for s in get_path(config, "data") if s != TRAIN_SPLIT]


def compile_options(value: bool | str | Mapping[str, Any]) -> dict[str, Any]:
    """``trainer.compile``: ``true`` (inductor), a backend name (``"aot_eager"``, ``"eager"``, ...)
    or a dict of ``torch.compile`` arguments; shapes are dynamic unless the dict says otherwise."""
    if value is True:
        return {"dynamic": True}
    if isinstance(value, str):
        return {"dynamic": True, "backend": value}
    if isinstance(value, dict):
        return {"dynamic": True, **value}
    raise ConfigError(
        f"trainer.compile must be true, a backend name or a dict of torch.compile arguments, got {value!r}"
    )


def validate_config(config: Mapping[str, Any]) -> RunSpec:
    """Check a training config and resolve it, once, into the :class:`~hw_asr.schema.RunSpec` the run is built
    from: every ``type`` resolves to its class and takes the arguments named, the required keys exist, splits
    list datasets and the files it names exist. Nothing is built and nothing is read but file names."""
    for key in ("arch", "data.train", "optimizer", "trainer.epochs"):
        get_path(config, key)
    check_known_keys(config, TOP_KEYS, "config")
    check_known_keys(config.get("augmentations") or {}, {"wave"}, "augmentations")
    parts = {name: read(config) for name, read in _READERS.items()}
    for name, block in parts["decoders"].items():
        check_decoder_files(config["decoders"][name], block.where)
    used = {b.args.get("decoder", "argmax") for b in parts["metrics"]}
    undefined = used - {"argmax"} - set(parts["decoders"])
    if undefined:
        raise ConfigError(f"metrics use decoder(s) {sorted(undefined)} not defined under 'decoders'")

    splits = {}
    for split, block in config["data"].items():
        cfg = DataSplitConfig.from_dict(block, f"data.{split}")
        blocks = _read_datasets(config, split)
        for i, b in enumerate(blocks):
            manifest = b.args.get("manifest_path")
            for m in [manifest] if isinstance(manifest, str) else manifest or []:
                if not Path(m).is_file():
                    raise ConfigError(f"data.{split}.datasets.{i}.args.manifest_path: file not found: {m}")
        sampler = (
            Block.of(cfg.batch_sampler, batch_sampler, f"data.{split}.batch_sampler") if cfg.batch_sampler else None
        )
        splits[split] = SplitSpec(split, cfg, blocks, sampler)
    tcfg = TrainerConfig.from_dict(config["trainer"])
    if tcfg.compile:
        compile_options(tcfg.compile)
    # keep_freed_memory: host_memory.configure, train.py's first step
    for key in ("tf32", "sync_batchnorm", "head_prior"):
        if not isinstance(getattr(tcfg, key), (bool, type(None))):
            raise ConfigError(f"trainer.{key} must be true, false or null, got {config['trainer'][key]!r}")
    if tcfg.init_weights and not Path(tcfg.init_weights).is_file():
        raise ConfigError(f"trainer.init_weights: checkpoint not found: {tcfg.init_weights}")
    return RunSpec(
        config_json=json.dumps(config),
        name=config.get("name", "run"),
        seed=config_seed(config),
        sample_rate=config_sample_rate(config),
        trainer=tcfg,
        splits=MappingProxyType(splits),
        **{k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in parts.items()},
    )
