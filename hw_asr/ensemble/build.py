"""Build a confidence ensemble file from trained checkpoints.

    python -m hw_asr.ensemble.build -c configs/ensemble_en_ru.json [key=value ...]

Config::

    {"ensemble": [{"model": "<checkpoint.pth>", "training_manifest": "<train.jsonl>",
                   "dev_manifest": "<dev.jsonl>", "name": "en", "decoders": {...}}, ...],
     "output_path": "ensemble.pth", "temperature": 1.0,
     "confidence": {"exclude_blank": true, "aggregation": "mean",
                    "method_cfg": {"name": "entropy", "entropy_type": "renyi", "alpha": 0.25,
                                   "entropy_norm": "lin"}},
     "max_training_samples": 500, "max_dev_samples": 500, "tune_confidence": false, "seed": 0}

Per member, up to ``max_training_samples`` utterances of its training manifest
(seeded random subset; transcripts are not used) are run through every member;
their M confidences are the features and the member's index the label. With
``dev_manifest`` given for every member, C, class weighting and multinomial vs
one-vs-rest are tuned on dev accuracy, and with ``tune_confidence`` the confidence
settings and temperature are searched too. ``decoders`` (optional, per member) are
that member's beam/LM decoder blocks, as under ``decoders`` in a training config;
by default those of the member's own checkpoint config.
"""

import argparse
import json
import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from hw_asr.checkpoint import CheckpointError
from hw_asr.config import ConfigError, apply_overrides, check_known_keys, load_config
from hw_asr.device import pick_device
from hw_asr.ensemble.confidence import confidence_features, confidence_settings
from hw_asr.ensemble.ensemble import (
    SELECTOR_GRID,
    ConfidenceEnsemble,
    Member,
    fit_selector,
    members_log_probs,
    tune_selector,
)
from hw_asr.manifests import read_manifest, report_skipped

logger = logging.getLogger("ensemble.build")

CONFIDENCE_GRID = {
    "temperature": [0.5, 1.0, 2.0],
    "exclude_blank": [True, False],
    "aggregation": ["mean", "min", "prod"],
    "method_cfg": [
        {"name": "max_prob", "alpha": 1.0},
        {"name": "max_prob", "alpha": 0.5},
        *({"name": "entropy", "entropy_type": "gibbs", "entropy_norm": n} for n in ("lin", "exp")),
        *(
            {"name": "entropy", "entropy_type": t, "alpha": a, "entropy_norm": n}
            for t in ("tsallis", "renyi")
            for a in (0.25, 0.5, 0.75)
            for n in ("lin", "exp")
        ),
    ],
}


def manifest_paths(path: str | os.PathLike, limit: int | None, seed: int) -> list[str]:
    """Audio paths of a manifest, a seeded random subset of at most ``limit``."""
    rows, skipped = read_manifest(path)
    report_skipped(str(path), skipped)
    if not rows:
        raise ConfigError(f"manifest {path} has no usable utterances")
    paths = sorted(r["path"] for r in rows)
    if limit is not None and len(paths) > limit:
        paths = sorted(random.Random(seed).sample(paths, limit))
    return paths


BUILD_KEYS = {
    "name",
    "description",
    "ensemble",
    "output_path",
    "temperature",
    "confidence",
    "tune_confidence",
    "selector_grid",
    "max_training_samples",
    "max_dev_samples",
    "seed",
    "batch_size",
    "device",
}
MEMBER_KEYS = {"model", "training_manifest", "dev_manifest", "name", "decoders"}


def validate(cfg: Mapping[str, Any]) -> None:
    check_known_keys(cfg, BUILD_KEYS, "config")
    members = cfg.get("ensemble")
    if not isinstance(members, list) or len(members) < 2:
        raise ConfigError('\'ensemble\' must list at least two members: {"model": ..., "training_manifest": ...}')
    for i, m in enumerate(members):
        for key in ("model", "training_manifest"):
            if not isinstance(m, dict) or key not in m:
                raise ConfigError(f"ensemble.{i}: needs {key!r}")
        check_known_keys(m, MEMBER_KEYS, f"ensemble.{i}")
    dev = [("dev_manifest" in m) for m in members]
    if any(dev) and not all(dev):
        raise ConfigError("give dev_manifest for every member or for none")
    if "output_path" not in cfg:
        raise ConfigError("'output_path' is required (where to write the ensemble file)")
    try:
        confidence_settings(cfg.get("confidence"))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def collect(
    members: Sequence[Member], manifests: Sequence[str | os.PathLike], limit: int | None, seed: int, batch_size: int
) -> tuple[list[list[Tensor]], np.ndarray]:
    """Log-probs ``[m][n]`` of every member on the union of the manifests, and the labels
    (the index of the manifest each utterance came from)."""
    paths, labels = [], []
    for k, manifest in enumerate(manifests):
        p = manifest_paths(manifest, limit, seed)
        paths += p
        labels += [k] * len(p)
    return members_log_probs(members, paths, batch_size), np.array(labels)


def search_confidence(
    train_lp: Sequence[Sequence[Tensor]],
    train_y: np.ndarray,
    dev_lp: Sequence[Sequence[Tensor]],
    dev_y: np.ndarray,
    grid: Mapping[str, Sequence] | None = None,
) -> tuple[tuple[dict[str, Any], float, float] | None, list[dict]]:
    """Confidence settings x temperature with the best dev accuracy of a default selector."""
    grid = grid or CONFIDENCE_GRID
    best, table = None, []
    for temperature in grid["temperature"]:
        for exclude_blank in grid["exclude_blank"]:
            for aggregation in grid["aggregation"]:
                for method in grid["method_cfg"]:
                    settings = confidence_settings(
                        {"exclude_blank": exclude_blank, "aggregation": aggregation, "method_cfg": method}
                    )
                    tx = confidence_features(train_lp, settings, temperature).numpy()
                    dx = confidence_features(dev_lp, settings, temperature).numpy()
                    try:
                        acc = float((fit_selector(tx, train_y).predict(dx) == dev_y).mean())
                    except ValueError:
                        continue
                    table.append({"temperature": temperature, **settings, "dev_accuracy": acc})
                    if best is None or acc > best[2]:
                        best = (settings, temperature, acc)
    return best, table


def build(cfg: Mapping[str, Any]) -> ConfidenceEnsemble:
    validate(cfg)
    seed, batch_size = cfg.get("seed", 0), cfg.get("batch_size", 8)
    device = pick_device(cfg.get("device", "cpu"))
    members = []
    for i, m in enumerate(cfg["ensemble"]):
        members.append(Member.from_checkpoint(m["model"], m.get("name") or f"member{i}", m.get("decoders"), device))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"member names must differ, got {names}; set 'name' per member")
    logger.info("collecting confidences of %d members on their training manifests", len(members))
    train_lp, train_y = collect(
        members,
        [m["training_manifest"] for m in cfg["ensemble"]],
        cfg.get("max_training_samples", 500),
        seed,
        batch_size,
    )
    has_dev = "dev_manifest" in cfg["ensemble"][0]
    if has_dev:
        dev_lp, dev_y = collect(
            members, [m["dev_manifest"] for m in cfg["ensemble"]], cfg.get("max_dev_samples", 500), seed, batch_size
        )
    confidence, temperature = confidence_settings(cfg.get("confidence")), float(cfg.get("temperature", 1.0))
    info = {"members": names, "train_counts": np.bincount(train_y, minlength=len(members)).tolist()}
    if cfg.get("tune_confidence"):
        if not has_dev:
            raise ConfigError("tune_confidence needs a dev_manifest per member")
        (confidence, temperature, acc), table = search_confidence(train_lp, train_y, dev_lp, dev_y)
        info["confidence_search"] = sorted(table, key=lambda r: -r["dev_accuracy"])[:10]
        logger.info(
            "confidence search: best dev accuracy %.4f with temperature %s, %s",
            acc,
            temperature,
            json.dumps(confidence),
        )
    train_x = confidence_features(train_lp, confidence, temperature).numpy()
    if has_dev:
        dev_x = confidence_features(dev_lp, confidence, temperature).numpy()
        selector, dev_acc, table = tune_selector(
            train_x, train_y, dev_x, dev_y, cfg.get("selector_grid", SELECTOR_GRID)
        )
        info.update(
            dev_counts=np.bincount(dev_y, minlength=len(members)).tolist(), dev_accuracy=dev_acc, selector_search=table
        )
    else:
        selector = fit_selector(train_x, train_y, seed=seed)
    info["train_accuracy"] = float((selector.predict(train_x) == train_y).mean())
    info["selector"] = selector.params
    ensemble = ConfidenceEnsemble(members, selector, confidence, temperature, info)
    ensemble.save(cfg["output_path"])
    return ensemble


def main(argv: Sequence[str] | None = None) -> ConfidenceEnsemble:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        cfg = apply_overrides(load_config(args.config), args.overrides)
        ensemble = build(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    info = ensemble.info
    print(f"members: {', '.join(info['members'])}; training utterances per member: {info['train_counts']}")
    print(
        f"selector {info['selector']}: train accuracy {info['train_accuracy']:.4f}"
        + (f", dev accuracy {info['dev_accuracy']:.4f}" if "dev_accuracy" in info else "")
    )
    print(f"confidence: temperature {ensemble.temperature}, {json.dumps(ensemble.confidence)}")
    print(f"wrote {cfg['output_path']}")
    return ensemble


if __name__ == "__main__":
    main()
