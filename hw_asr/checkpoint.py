"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)`` only."""

import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def epoch_checkpoints(run_dir: str | os.PathLike) -> dict[int, Path]:
    """``{epoch: path}`` of a run folder's periodic ``checkpoint-epoch<K>.pth`` files."""
    found = {}
    for path in Path(run_dir).glob("checkpoint-epoch*.pth"):
        suffix = path.stem.removeprefix("checkpoint-epoch")
        if suffix.isdigit():
            found[int(suffix)] = path
    return found


def find_checkpoint(path: str | os.PathLike, prefer_best: bool = False) -> Path:
    """``path`` itself, or for a run folder the checkpoint in it: its newest complete
    ``checkpoint-*.pth`` (to resume), or with ``prefer_best`` its ``model_best.pth`` when there
    is one (to evaluate). Temporary files left by a process killed while writing are removed."""
    path = Path(path)
    if not path.is_dir():
        return path
    for stale in path.glob(".*.pth.tmp*"):
        stale.unlink(missing_ok=True)
    if prefer_best and (path / "model_best.pth").is_file():
        return path / "model_best.pth"
    candidates = list(path.glob("checkpoint-*.pth"))
    if not candidates:
        raise CheckpointError(f"no {'model_best.pth or ' * prefer_best}checkpoint-*.pth in the folder {path}")
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything that
    would run code is refused with a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save's zip, or a pickle
        raise CheckpointError(
            f"{path}: not a checkpoint: a file written by torch.save begins as a zip archive "
            f"(or a pickle), this one does not ({'empty' if not head else f'begins {head!r}'})"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain data "
            f"(a checkpoint must load with weights_only=True; files from untrusted sources can run code). "
            f"Details: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {e}") from None
    return state


# the ``format`` a confidence-ensemble file declares (hw_asr.ensemble writes it); a single-model
# checkpoint has none
ENSEMBLE_FORMAT = "hw_asr.confidence_ensemble"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint safely (see :func:`safe_torch_load`)."""
    return check_checkpoint(safe_torch_load(path, map_location), path)


def check_checkpoint(state: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``state`` if it is a single-model checkpoint; a clear error otherwise."""
    if isinstance(state, dict) and state.get("format") == ENSEMBLE_FORMAT:
        raise CheckpointError(
            f"{path}: is a confidence-ensemble file, not a single-model checkpoint "
            f"(load it with hw_asr.ensemble.ConfidenceEnsemble.load)"
        )
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not an hw_asr checkpoint (needs 'model' and 'config')")
    return state


def compare_weights(
    own: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Two state dicts by tensor name and shape: ``(missing, unexpected, reshaped)`` names --
    in ``own`` only, in ``weights`` only, in both with other shapes."""
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    return missing, unexpected, reshaped


def check_weights_fit(
    model: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: str | os.PathLike, hint: str = ""
) -> None:
    """Refuse ``weights`` (a state dict) that do not fit ``model``, in one short account of what
    differs rather than torch's list of every tensor."""
    own = model.state_dict()
    missing, unexpected, reshaped = compare_weights(own, weights)
    if not (missing or unexpected or reshaped):
        return
    parts = [
        f"{len(missing)} of this model's tensors are not in it" + (f" (first: {missing[0]})" if missing else ""),
        f"{len(unexpected)} of its tensors are not in this model"
        + (f" (first: {unexpected[0]})" if unexpected else ""),
    ]
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} differ in shape (first: {k}, {list(weights[k].shape)} in the file, "
            f"{list(own[k].shape)} here)"
        )
    raise CheckpointError(f"{path}: its weights do not fit the model this config builds: {'; '.join(parts)}. {hint}")


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch as plain data (safe to load)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
