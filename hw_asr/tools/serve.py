"""A transcription web page and JSON API for a trained model.

    python -m hw_asr.tools.serve -r <checkpoint.pth | run folder | model.onnx> [--host 127.0.0.1] [--port 8000]
        [--decoders all|argmax,beam,...] [--max-seconds 60] [--threads N] [key=value ...]

- ``GET /``: one page: upload a file or record from the microphone, and see the transcript of every decoder,
  with the words of the first one coloured by confidence and their start and end times.
- ``POST /transcribe`` (multipart form, field ``file``): the JSON that ``test.py --timestamps`` writes for one
  file: ``audio_path`` (the uploaded name), ``ground_truth`` (null), ``pred_<decoder>`` for each decoder,
  ``words`` (``[{"word", "start", "end", "confidence", "min_confidence"}]``, the first decoder's hypothesis
  aligned to the frames), plus ``duration`` and ``sample_rate`` of the upload.
- ``GET /health``: the model, runtime and decoders.

A run folder serves its ``model_best.pth`` (else its newest checkpoint). A ``.onnx`` export runs in onnxruntime;
its text encoder, frame times and decoders come from the checkpoint named in its metadata (or ``--checkpoint``).
Decoders are the checkpoint's ``decoders`` block (``key=value`` overrides apply, as in test.py), greedy first.

Bad input is answered with a 4xx status and ``{"detail": "<what is wrong>"}``, and the server keeps serving:
an empty upload (400), a file that is not decodable audio (415), audio longer than ``--max-seconds`` (413),
a sample rate below 8 kHz (422). Other sample rates are resampled to the model's.
"""

import argparse
import io
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hw_asr.alignment import align_batch
from hw_asr.audio import AudioError, UndecodableAudio, decode_audio, resample
from hw_asr.builder import build_decoders, config_sample_rate, load_model
from hw_asr.checkpoint import find_checkpoint
from hw_asr.config import ConfigError, apply_overrides
from hw_asr.inference import decode_batch
from hw_asr.text_encoder.base import BaseTextEncoder

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("serve_page.html")
MIN_SAMPLE_RATE = 8000
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


class BadAudio(Exception):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Transcriber:
    """A model, its text encoder and decoders, behind a lock (one inference at a time).

    Args:
        model: a CTC model (or :class:`~hw_asr.export.OnnxCTCModel`) returning ``log_probs`` and their lengths.
        encoder: its text encoder. decoders (dict): name -> decoder (``"argmax"``: None), as ``build_decoders``.
        sample_rate (int): the model's. max_seconds (float): longest audio accepted.
        name (str): what ``/health`` reports. timestamps_of (str or None): the decoder whose words are aligned
            (default: the first).
    """

    def __init__(
        self,
        model: Any,
        encoder: BaseTextEncoder,
        decoders: Mapping[str, Any],
        sample_rate: int,
        max_seconds: float = 60.0,
        name: str = "model",
        timestamps_of: str | None = None,
    ) -> None:
        self.model, self.encoder, self.decoders = model, encoder, dict(decoders)
        self.sample_rate, self.max_seconds, self.name = sample_rate, max_seconds, name
        self.timestamps_of = timestamps_of or next(iter(self.decoders))
        self.lock = threading.Lock()

    def read(self, data: bytes, filename: str) -> tuple[np.ndarray, int, float]:
        """Decoded mono audio at the model's rate, the file's rate and its duration; :class:`BadAudio` if not."""
        if not data:
            raise BadAudio(400, f"{filename}: the upload is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadAudio(413, f"{filename}: {len(data)} bytes; this server takes at most {MAX_UPLOAD_BYTES}")
        try:
            mono, rate = decode_audio(io.BytesIO(data), filename)
        except UndecodableAudio as e:
            raise BadAudio(415, f"{filename}: not audio that can be decoded ({e.reason})") from None
        except AudioError as e:  # empty, or NaN / infinite samples
            raise BadAudio(400, f"{filename}: the {e.reason}") from None
        duration = len(mono) / rate
        if duration > self.max_seconds:
            raise BadAudio(
                413, f"{filename}: {duration:.1f} s of audio; this server takes at most {self.max_seconds:g} s"
            )
        if rate < MIN_SAMPLE_RATE:
            raise BadAudio(422, f"{filename}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz; record at 16 kHz")
        return resample(mono, rate, self.sample_rate), rate, duration

    def transcribe(self, data: bytes, filename: str = "upload") -> dict:
        audio, rate, duration = self.read(data, filename)
        wave = torch.from_numpy(np.ascontiguousarray(audio)).reshape(1, -1)
        length = torch.tensor([wave.shape[1]])
        with self.lock, torch.no_grad():
            out = self.model(audio=wave, audio_length=length)
            hyps = decode_batch(
                out["log_probs"].float().cpu(), out["log_probs_length"].cpu(), self.encoder, self.decoders
            )
        texts = hyps[self.timestamps_of][:1]
        words = align_batch(self.model, length, out, texts, self.encoder, self.sample_rate)[0]
        row = {"audio_path": filename, "ground_truth": None, "words": words}
        row.update({f"pred_{d}": hyps[d][0] for d in self.decoders})
        return {**row, "duration": round(duration, 3), "sample_rate": rate}


def load_transcriber(
    source: str | os.PathLike,
    runtime_checkpoint: str | os.PathLike | None = None,
    decoders: str = "all",
    overrides: Sequence[str] = (),
    threads: int | None = None,
    max_seconds: float = 60.0,
) -> Transcriber:
    """A :class:`Transcriber` for a checkpoint, a run folder or an ONNX export (see the module docstring)."""
    source = Path(source)
    onnx = source.suffix == ".onnx"
    if onnx:
        from hw_asr.export import OnnxCTCModel

        exported = OnnxCTCModel(source, threads=threads)
        checkpoint = Path(runtime_checkpoint or exported.metadata.get("checkpoint") or "")
        if not checkpoint.is_file():
            raise ConfigError(
                f"{source}: its text encoder, frame times and decoders come from the checkpoint it was exported "
                f"from ({checkpoint or 'not named in its metadata'}), which is not there: name one with --checkpoint"
            )
    else:
        checkpoint = find_checkpoint(source, prefer_best=True)
    model, encoder, config = load_model(checkpoint)
    if onnx:
        if exported.n_tokens != len(encoder):
            raise ConfigError(
                f"{source} outputs {exported.n_tokens} tokens but {checkpoint}'s encoder has {len(encoder)}"
            )
        exported.frontend = model.frontend
        model = exported
    block = apply_overrides(
        {"decoders": config.get("decoders") or {}}, [o for o in overrides if o.startswith("decoders")]
    )
    names = None if decoders == "all" else [d.strip() for d in decoders.split(",") if d.strip()]
    built = build_decoders(block, encoder, names)
    if names and names[0] in built:  # the first named decoder is the one whose words are aligned
        built = {names[0]: built.pop(names[0]), **built}
    name = f"{source} ({'onnxruntime' if onnx else 'PyTorch'})"
    return Transcriber(model, encoder, built, config_sample_rate(config), max_seconds, name)


def create_app(transcriber: Transcriber) -> Any:
    """The FastAPI application serving ``transcriber``."""
    from fastapi import FastAPI, File, HTTPException, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="hw_asr transcription", docs_url="/docs")
    page = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "model": transcriber.name,
            "decoders": list(transcriber.decoders),
            "sample_rate": transcriber.sample_rate,
            "max_seconds": transcriber.max_seconds,
        }

    @app.post("/transcribe")
    async def transcribe(file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read()
        try:
            return await run_in_threadpool(transcriber.transcribe, data, file.filename or "upload")
        except BadAudio as e:
            logger.info("refused %s: %s", file.filename, e)
            raise HTTPException(status_code=e.status, detail=str(e)) from None

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-r", "--resume", required=True, help="a checkpoint, a run folder or an .onnx export")
    parser.add_argument("--checkpoint", default=None, help="for an .onnx export: the checkpoint it came from")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--decoders", default="all", help="'all' or a comma list; the first one's words are timed")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest audio accepted")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads")
    parser.add_argument("overrides", nargs="*", help="decoders.* key=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        transcriber = load_transcriber(
            args.resume, args.checkpoint, args.decoders, args.overrides, args.threads, args.max_seconds
        )
    except (ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    import uvicorn

    logger.info(
        "serving %s with decoders %s on http://%s:%d",
        transcriber.name,
        list(transcriber.decoders),
        args.host,
        args.port,
    )
    uvicorn.run(create_app(transcriber), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
