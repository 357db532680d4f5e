"""Confidence-based ensemble: route each utterance to the member model that fits it.

Every member transcribes the utterance; the M utterance confidences (see
:mod:`hw_asr.ensemble.confidence`) go into a small classifier (standard scaling +
logistic regression) trained to tell which member's training data an utterance
resembles; the chosen member's transcript is the answer. This is the idea of
Gitman et al., "Confidence-based Ensembles of End-to-End Speech Recognition
Models", Interspeech 2023.

The ensemble file holds the members' weights, configs, text encoders and decoder
settings, the confidence settings and the classifier as plain arrays, so it loads
with ``torch.load(weights_only=True)``; no code is pickled.
"""

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hw_asr.audio import find_audio_files, load_audio, resample
from hw_asr.builder import build_decoders, build_model
from hw_asr.checkpoint import ENSEMBLE_FORMAT, CheckpointError, load_checkpoint, safe_torch_load, save_checkpoint
from hw_asr.ensemble.confidence import confidence_features, confidence_settings, migrate_confidence
from hw_asr.manifests import read_manifest, report_skipped
from hw_asr.schema import sample_rate as config_sample_rate
from hw_asr.text_encoder import text_encoder_from_state

logger = logging.getLogger(__name__)
FORMAT = ENSEMBLE_FORMAT
VERSION = 1


# ---------------------------------------------------------------------------------------
# members
class Member:
    """One trained model with its text encoder and optional beam/LM decoders."""

    def __init__(
        self,
        name: str,
        model_state: Mapping[str, Tensor],
        config: Mapping[str, Any],
        encoder_state: Mapping[str, Any],
        decoders_cfg: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.name, self.config, self.device = name, config, torch.device(device)
        self.encoder_state, self.decoders_cfg = encoder_state, decoders_cfg or {}
        self.encoder = text_encoder_from_state(encoder_state)
        self.model = build_model(config, n_tokens=len(self.encoder))
        self.model.load_state_dict(model_state)
        self.model.to(self.device).eval()
        self.sample_rate = config_sample_rate(config)
        self.decoders = build_decoders({"decoders": self.decoders_cfg}, self.encoder, None)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        name: str | None = None,
        decoders_cfg: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> "Member":
        state = load_checkpoint(path)
        if decoders_cfg is None:
            decoders_cfg = state["config"].get("decoders") or {}
        return cls(
            name or Path(path).parent.name or Path(path).stem,
            state["model"],
            state["config"],
            state["text_encoder"],
            decoders_cfg,
            device,
        )

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "config": self.config,
            "text_encoder": self.encoder_state,
            "decoders": self.decoders_cfg,
        }

    @torch.no_grad()
    def log_probs(self, waves: Sequence[Tensor], batch_size: int = 8) -> list[Tensor]:
        """Frame log-probs ``[T_i, V]`` (CPU, real frames only) for each float32 waveform,
        in input order; batches group utterances of similar length to save padding."""
        order = sorted(range(len(waves)), key=lambda i: waves[i].numel())
        out = [None] * len(waves)
        for start in range(0, len(waves), batch_size):
            idx = order[start : start + batch_size]
            chunk = [waves[i] for i in idx]
            lengths = torch.tensor([w.numel() for w in chunk], dtype=torch.long)
            audio = torch.zeros(len(chunk), int(lengths.max()))
            for i, w in enumerate(chunk):
                audio[i, : w.numel()] = w
            result = self.model(audio=audio.to(self.device), audio_length=lengths.to(self.device))
            lp, lp_len = result["log_probs"].float().cpu(), result["log_probs_length"].cpu()
            for k, i in enumerate(idx):
                out[i] = lp[k, : max(1, int(lp_len[k]))]
        return out

    def decode(self, log_probs: Sequence[Tensor], decoder: str = "argmax") -> list[str]:
        """Transcripts of a list of ``[T, V]`` log-probs with the named decoder."""
        lengths = torch.tensor([lp.shape[0] for lp in log_probs])
        padded = torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True)
        if decoder == "argmax":
            return self.encoder.ctc_greedy(padded, lengths)
        if decoder not in self.decoders:
            raise KeyError(
                f"member {self.name!r} has no decoder {decoder!r} (it has argmax"
                f"{', ' if self.decoders else ''}{', '.join(self.decoders)})"
            )
        return self.decoders[decoder].decode_batch(padded, lengths)


# ---------------------------------------------------------------------------------------
# the selection classifier, stored as plain arrays
class Selector:
    """Standard scaling + logistic regression, evaluated with numpy from stored arrays."""

    def __init__(
        self,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        classes: Sequence[int] | np.ndarray,
        mode: str = "multinomial",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)
        self.coef, self.intercept = np.atleast_2d(np.asarray(coef, float)), np.atleast_1d(np.asarray(intercept, float))
        self.classes = np.asarray(classes, int)
        self.mode, self.params = mode, params or {}

    @classmethod
    def from_sklearn(cls, pipeline: Any, mode: str, params: Mapping[str, Any] | None = None) -> "Selector":
        scaler, clf = pipeline[0], pipeline[-1]
        if mode == "ovr" and hasattr(clf, "estimators_"):
            coef = np.vstack([e.coef_ for e in clf.estimators_])
            intercept = np.concatenate([e.intercept_ for e in clf.estimators_])
        else:
            coef, intercept = clf.coef_, clf.intercept_
        return cls(scaler.mean_, scaler.scale_, coef, intercept, clf.classes_, mode, params)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, float) - self.mean) / self.scale
        scores = z @ self.coef.T + self.intercept
        if scores.shape[1] == 1:  # two classes: one logistic unit
            p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - p, p], 1)
        if self.mode == "multinomial":
            scores = scores - scores.max(1, keepdims=True)
            e = np.exp(scores)
            return e / e.sum(1, keepdims=True)
        p = 1.0 / (1.0 + np.exp(-scores))
        return p / p.sum(1, keepdims=True)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.classes[self.predict_proba(features).argmax(1)]

    def state(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(self.mean),
            "scale": torch.from_numpy(self.scale),
            "coef": torch.from_numpy(self.coef),
            "intercept": torch.from_numpy(self.intercept),
            "classes": torch.from_numpy(self.classes.astype(np.int64)),
            "mode": self.mode,
            "params": self.params,
        }

    @classmethod
    def from_state(cls, s: Mapping[str, Any]) -> "Selector":
        return cls(
            s["mean"].numpy(),
            s["scale"].numpy(),
            s["coef"].numpy(),
            s["intercept"].numpy(),
            s["classes"].numpy(),
            s["mode"],
            s.get("params"),
        )


def fit_selector(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    C: float = 1.0,
    class_weight: str | None = "balanced",
    mode: str = "multinomial",
    seed: int = 0,
) -> Selector:
    """Fit StandardScaler + LogisticRegression (``mode`` multinomial or one-vs-rest)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(np.asarray(labels).tolist())) < 2:
        raise ValueError("the selector needs utterances of at least two members")
    clf = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000, random_state=seed)
    if mode == "ovr":
        clf = OneVsRestClassifier(clf)
    pipeline = make_pipeline(StandardScaler(), clf).fit(np.asarray(features), np.asarray(labels))
    return Selector.from_sklearn(pipeline, mode, {"C": C, "class_weight": class_weight, "mode": mode})


SELECTOR_GRID = {
    "C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
    "class_weight": ["balanced", None],
    "mode": ["multinomial", "ovr"],
}


def tune_selector(
    train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray, grid: Sequence[float] | None = None
) -> tuple[Selector, float, list]:
    """The selector with the best dev accuracy over ``grid`` (ties: the earlier setting);
    returns ``(selector, dev_accuracy, table)``."""
    grid = grid or SELECTOR_GRID
    best, table = None, []
    for C in grid["C"]:
        for cw in grid["class_weight"]:
            for mode in grid["mode"]:
                sel = fit_selector(train_x, train_y, C, cw, mode)
                acc = float((sel.predict(dev_x) == np.asarray(dev_y)).mean())
                table.append({"C": C, "class_weight": cw, "mode": mode, "dev_accuracy": acc})
                if best is None or acc > best[1]:
                    best = (sel, acc)
    return best[0], best[1], table


# ---------------------------------------------------------------------------------------
# inputs
def load_waveform(
    item: str | Path | np.ndarray | Tensor | tuple, sample_rate: int, source_rate: int | None = None
) -> Tensor:
    """A float32 ``[T]`` tensor at ``sample_rate`` from a path, a numpy array or a tensor.
    In-memory audio is taken to be at ``source_rate`` (default ``sample_rate``) unless
    given as an ``(array, rate)`` pair."""
    if isinstance(item, (str, Path)):
        return torch.from_numpy(load_audio(item, sample_rate))
    rate = source_rate or sample_rate
    if isinstance(item, tuple):
        item, rate = item
    wave = torch.as_tensor(np.asarray(item, dtype=np.float32) if not torch.is_tensor(item) else item).float()
    if wave.dim() == 2:  # [channels, T] or [T, channels]: mono
        wave = wave.mean(0 if wave.shape[0] < wave.shape[1] else 1)
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"in-memory audio must be a non-empty 1-D waveform, got shape {tuple(wave.shape)}")
    return torch.from_numpy(resample(wave.numpy(), rate, sample_rate))


def expand_inputs(inputs: str | Path | Sequence[str | Path | np.ndarray | Tensor | tuple]) -> tuple[list, list[str]]:
    """Paths, a directory (audio files inside, recursively), a ``.jsonl`` manifest, or
    in-memory waveforms -> ``(items, names)``."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    items, names = [], []
    for k, x in enumerate(inputs):
        if not isinstance(x, (str, Path)):
            items.append(x), names.append(f"<waveform {k}>")
            continue
        p = Path(x)
        if p.is_dir():
            paths = [str(f) for f in find_audio_files(p)]
        elif p.suffix == ".jsonl":
            rows, skipped = read_manifest(p)
            report_skipped(str(p), skipped)
            paths = [r["path"] for r in rows]
        elif p.is_file():
            paths = [str(p)]
        else:
            raise FileNotFoundError(f"input not found: {p}")
        items += paths
        names += paths
    return items, names


def members_log_probs(
    members: Sequence[Member], items: Sequence[str | Path | np.ndarray | Tensor | tuple], batch_size: int = 8
) -> list[list[Tensor]]:
    """``[m][n]`` log-probs of every member for every input; waveforms are loaded once per
    sample rate (in-memory audio is taken to be at the first member's rate)."""
    waves_by_rate, out = {}, []
    for m in members:
        if m.sample_rate not in waves_by_rate:
            waves_by_rate[m.sample_rate] = [load_waveform(x, m.sample_rate, members[0].sample_rate) for x in items]
        out.append(m.log_probs(waves_by_rate[m.sample_rate], batch_size))
    return out


# ---------------------------------------------------------------------------------------
class ConfidenceEnsemble:
    def __init__(
        self,
        members: Sequence[Member],
        selector: Selector,
        confidence: Mapping[str, Any],
        temperature: float = 1.0,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.members, self.selector = members, selector
        self.confidence, self.temperature = confidence_settings(confidence), float(temperature)
        self.info = info or {}

    # ---- persistence ----
    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(
            {
                "format": FORMAT,
                "version": VERSION,
                "members": [m.state() for m in self.members],
                "selector": self.selector.state(),
                "confidence": self.confidence,
                "temperature": self.temperature,
                "info": self.info,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "ConfidenceEnsemble":
        return cls.from_state(load_ensemble_state(path), device, path)

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], device: str | torch.device = "cpu", where: str = "ensemble"
    ) -> "ConfidenceEnsemble":
        """From the dict :func:`load_ensemble_state` returns."""
        members = [
            Member(m["name"], m["model"], m["config"], m["text_encoder"], m.get("decoders"), device)
            for m in state["members"]
        ]
        confidence, changed = migrate_confidence(state["confidence"])
        if changed:
            logger.warning(
                "%s: confidence settings use the old key measure_cfg; rewrite the file with "
                "python -m hw_asr.ensemble.migrate %s",
                where,
                where,
            )
        return cls(
            members,
            Selector.from_state(state["selector"]),
            confidence,
            state.get("temperature", 1.0),
            state.get("info"),
        )

    # ---- inference ----
    def member_log_probs(
        self, items: Sequence[str | Path | np.ndarray | Tensor | tuple], batch_size: int = 8
    ) -> list[list[Tensor]]:
        return members_log_probs(self.members, items, batch_size)

    def features(self, per_model_log_probs: Sequence[Sequence[Tensor]]) -> np.ndarray:
        return confidence_features(per_model_log_probs, self.confidence, self.temperature).numpy()

    def route(self, per_model_log_probs: Sequence[Sequence[Tensor]]) -> tuple[Tensor, np.ndarray, np.ndarray]:
        """``(features [N, M], selector probabilities [N, M], chosen member index [N])``."""
        feats = self.features(per_model_log_probs)
        probs = self.selector.predict_proba(feats)
        return feats, probs, self.selector.classes[probs.argmax(1)]

    def transcribe(
        self,
        inputs: str | Path | Sequence[str | Path | np.ndarray | Tensor | tuple],
        decoder: str | Sequence[str] = "argmax",
        batch_size: int = 8,
        return_all: bool = False,
    ) -> list[dict[str, Any]]:
        """Route and transcribe. ``inputs``: paths, a directory, a manifest, or waveforms
        (numpy/tensor at the first member's sample rate, or ``(array, rate)`` pairs).
        Returns one dict per utterance: ``text``, ``model`` (name), ``model_index``,
        ``confidences`` (per member), ``probabilities`` (the selector's), ``audio``; with
        ``return_all`` also ``member_texts``, every member's transcript. ``decoder`` names
        a decoder every member has (``argmax`` always; e.g. each member's beam+LM decoder),
        or is a list of them (then ``text`` maps decoder names to transcripts)."""
        items, names = expand_inputs(inputs)
        results = self.route_and_decode(
            items, [decoder] if isinstance(decoder, str) else decoder, batch_size, return_all
        )
        for r, name in zip(results, names):
            r["audio"] = name
            if isinstance(decoder, str):
                r["text"] = r["text"][decoder]
                if return_all:
                    r["member_texts"] = {m: t[decoder] for m, t in r["member_texts"].items()}
        return results

    def route_and_decode(
        self,
        items: Sequence[str | Path | np.ndarray | Tensor | tuple],
        decoders: Sequence[str] = ("argmax",),
        batch_size: int = 8,
        return_all: bool = False,
    ) -> list[dict[str, Any]]:
        """As :meth:`transcribe` for already expanded items; ``text`` maps each decoder to a transcript."""
        if not items:
            return []
        log_probs = self.member_log_probs(items, batch_size)
        feats, probs, choice = self.route(log_probs)
        results = [
            {
                "model_index": int(choice[i]),
                "model": self.members[choice[i]].name,
                "confidences": [float(v) for v in feats[i]],
                "probabilities": [float(v) for v in probs[i]],
                "text": {},
            }
            for i in range(len(items))
        ]
        for k, m in enumerate(self.members):
            idx = [i for i in range(len(items)) if return_all or choice[i] == k]
            for d in decoders if idx else ():
                for i, t in zip(idx, m.decode([log_probs[k][i] for i in idx], d)):
                    if return_all:
                        results[i].setdefault("member_texts", {}).setdefault(m.name, {})[d] = t
                    if choice[i] == k:
                        results[i]["text"][d] = t
        return results


def check_ensemble_state(state: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``state`` if it is an ensemble dict this version reads; a clear error otherwise."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a confidence-ensemble file (no format {FORMAT!r})")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{where}: ensemble format version {state['version']} is newer than this "
            f"hw_asr reads ({VERSION}); update hw_asr"
        )
    return state


def load_ensemble_state(path: str | os.PathLike) -> dict[str, Any]:
    """The raw ensemble dict, loaded safely (``weights_only``)."""
    return check_ensemble_state(safe_torch_load(path), path)
