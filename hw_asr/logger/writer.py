"""Where training numbers go: console, ``metrics.jsonl`` in the run folder, and comet-ml or TensorBoard.

comet-ml runs online when ``COMET_API_KEY`` is set and offline otherwise
(an archive in ``<run>/comet/`` to upload later with ``comet upload``), so a
run never waits on the network. TensorBoard writes event files into
``<run>/tensorboard/`` (``tensorboard --logdir <run>/tensorboard``): the same
scalars, spectrograms, audio and prediction tables.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hw_asr.schema import VISUALIZE

if TYPE_CHECKING:
    import numpy as np
    import torch

logger = logging.getLogger(__name__)


LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def setup_logging(run_dir: str | os.PathLike | None = None, level: int = logging.INFO, hold: bool = False) -> None:
    """Log to stderr and, with ``run_dir``, to ``<run_dir>/train.log``. With ``hold`` the records are
    also kept in memory until :func:`attach_log_file` writes them into the run folder, which then need
    not exist yet (nothing is created for a run that fails while it starts)."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if hold and run_dir is None:
        handlers.append(logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1))
    for h in handlers:
        h.setFormatter(LOG_FORMAT)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    if run_dir is not None:
        attach_log_file(run_dir)


def attach_log_file(run_dir: str | os.PathLike) -> None:
    """Log into ``<run_dir>/train.log`` from now on, beginning with the records held since start-up."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(Path(run_dir) / "train.log", encoding="utf-8")
    file_handler.setFormatter(LOG_FORMAT)
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.handlers.MemoryHandler):
            h.setTarget(file_handler)
            h.flush()
            root.removeHandler(h)
            h.close()
    root.addHandler(file_handler)


def _make_comet(run_dir: str | os.PathLike, project_name: str, run_name: str, config: Mapping[str, Any]) -> Any:
    os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")  # we log explicitly; no import-order hooks
    try:
        import comet_ml
    except ImportError:
        logger.warning("comet-ml is not installed; logging to metrics.jsonl only")
        return None
    quiet = dict(
        auto_metric_logging=False,
        auto_param_logging=False,
        auto_output_logging=False,
        log_env_details=False,
        log_git_metadata=False,
        log_git_patch=False,
        log_code=False,
        log_env_gpu=False,
        log_env_host=False,
        log_env_cpu=False,
        parse_args=False,
        display_summary_level=0,
    )
    try:
        if os.environ.get("COMET_API_KEY"):
            exp = comet_ml.Experiment(project_name=project_name, **quiet)
        else:
            offline_dir = Path(run_dir) / "comet"
            offline_dir.mkdir(parents=True, exist_ok=True)
            exp = comet_ml.OfflineExperiment(project_name=project_name, offline_directory=str(offline_dir), **quiet)
        exp.set_name(run_name)
        exp.log_parameters(_flatten(config))
        return exp
    except Exception as e:  # comet must never stop training
        logger.warning("comet-ml could not start (%s); logging to metrics.jsonl only", e)
        return None


def _make_tensorboard(run_dir: str | os.PathLike) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed (pip install tensorboard); logging to metrics.jsonl only")
        return None
    return SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of ``rows`` (sequences in the order of ``headers``); floats to 3 decimals, ``|``
    escaped. TensorBoard's text tab and the error report render it."""
    cell = lambda v: (f"{v:.3f}" if isinstance(v, float) else str(v)).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def spectrogram_image(feats: torch.Tensor) -> np.ndarray:
    """``feats [F, T]`` as an 8-bit grey image array ``[F, T]``, low frequencies at the bottom."""
    import numpy as np

    img = feats.detach().float().cpu().numpy()
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
    return (np.flipud(img) * 255).astype(np.uint8)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


class Writer:
    """One object the trainer talks to. ``enabled=False`` (non-zero ranks) makes every call a no-op."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        visualize: str | None = "comet",
        project_name: str = "hw_asr",
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.comet = None
        self.tensorboard = None
        self.jsonl = None
        if not enabled:
            return
        self.run_dir = Path(run_dir)
        if visualize not in VISUALIZE:
            raise ValueError(f"trainer.visualize must be 'comet', 'tensorboard' or null, got {visualize!r}")
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if visualize == "comet":
            self.comet = _make_comet(run_dir, project_name, self.run_dir.name, config)
        elif visualize == "tensorboard":
            self.tensorboard = _make_tensorboard(run_dir)
            if self.tensorboard is not None:
                self.tensorboard.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    @property
    def media(self) -> bool:
        """Whether spectrograms, audio and prediction tables go anywhere (comet or TensorBoard)."""
        return self.comet is not None or self.tensorboard is not None

    def log_scalars(self, step: int, split: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.comet is not None:
            self.comet.log_metrics(values, prefix=split, step=step)
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(f"{split}/{key}", value, step)
            self.tensorboard.flush()

    def log_spectrogram(self, step: int, split: str, feats: torch.Tensor) -> None:
        if self.comet is not None:
            from PIL import Image

            self.comet.log_image(Image.fromarray(spectrogram_image(feats)), name=f"{split}_spectrogram", step=step)
        if self.tensorboard is not None:
            self.tensorboard.add_image(f"{split}/spectrogram", spectrogram_image(feats), step, dataformats="HW")

    def log_figure(self, step: int, split: str, name: str, figure: Any) -> None:
        """A matplotlib figure (e.g. the alignment picture of one utterance); closed afterwards."""
        if self.comet is not None:
            self.comet.log_figure(figure_name=f"{split}_{name}", figure=figure, step=step)
        if self.tensorboard is not None:
            self.tensorboard.add_figure(f"{split}/{name}", figure, step, close=False)
        import matplotlib.pyplot as plt

        plt.close(figure)

    def log_audio(self, step: int, split: str, audio: Any, sample_rate: int, name: str) -> None:
        if self.tensorboard is not None:
            wave = audio.detach().float().cpu().reshape(1, -1).clamp(-1, 1)
            self.tensorboard.add_audio(f"{split}/audio", wave, step, sample_rate=sample_rate)
        if self.comet is not None:
            with warnings.catch_warnings():  # comet first tests whether the array is a file path
                warnings.simplefilter("ignore", DeprecationWarning)
                self.comet.log_audio(
                    audio.detach().float().cpu().numpy(),
                    sample_rate=sample_rate,
                    file_name=f"{split}_{name}.wav",
                    step=step,
                )

    def log_predictions(self, step: int, split: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """``rows``: dicts with target, prediction(s), WER, CER."""
        if self.comet is not None and rows:
            headers = list(rows[0])
            self.comet.log_table(
                f"{split}_predictions_step{step}.csv",
                tabular_data=[[r[h] for h in headers] for r in rows],
                headers=headers,
            )
        if self.tensorboard is not None and rows:
            self.tensorboard.add_text(
                f"{split}/predictions", markdown_table(list(rows[0]), [list(r.values()) for r in rows]), step
            )
            self.tensorboard.flush()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
        if self.comet is not None:
            try:
                self.comet.end()
            except Exception as e:
                logger.warning("comet-ml did not close cleanly: %s", e)
            self.comet = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
