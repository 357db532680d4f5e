"""Lists of utterances on disk: NeMo-style JSON-lines manifests (one ``{"audio_filepath", "text",
"duration"}`` per line), the check every listed file goes through, and how skipped rows are reported."""

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from hw_asr.audio import AudioError, audio_duration

logger = logging.getLogger(__name__)

MAX_DETAILED_WARNINGS = 20


def report_skipped(source: str | os.PathLike, skipped: Sequence[tuple[str, str]]) -> None:
    """One warning per skipped row (the first few) and a count."""
    for path, reason in skipped[:MAX_DETAILED_WARNINGS]:
        logger.warning("%s: skipped %s: %s", source, path, reason)
    if skipped:
        logger.warning(
            "%s: skipped %d row(s) in all%s",
            source,
            len(skipped),
            "" if len(skipped) <= MAX_DETAILED_WARNINGS else f" (first {MAX_DETAILED_WARNINGS} listed)",
        )


def probe_row(
    path: str | os.PathLike, text: str, duration: float | None = None, where: str | None = None
) -> tuple[dict | None, str | None]:
    """Check that a file exists and has a readable header; fill the duration.

    ``where`` (e.g. ``manifest.jsonl:12``) is kept in the row so that later
    problems with its transcript name that line. Returns ``(row, None)`` or ``(None, reason)``.
    """
    if not Path(path).is_file():
        return None, "audio file not found"
    try:
        header_duration = audio_duration(path)
    except AudioError as e:
        return None, e.reason
    if header_duration <= 0:
        return None, "audio is empty (0 samples)"
    if duration is None:
        duration = header_duration
    row = {"path": str(path), "text": text, "duration": float(duration)}
    if where is not None:
        row["where"] = where
    return row, None


def read_manifest(manifest_path: str | os.PathLike) -> tuple[list[dict], list[tuple[str, str]]]:
    """Parse a manifest; returns ``(rows, skipped)``. Paths resolve relative to the manifest.

    Lines that are not UTF-8, not JSON, or lack ``audio_filepath``/``text`` are
    skipped and reported as ``file:line``; so are rows whose audio is missing or unreadable.
    """
    manifest_path = Path(manifest_path)
    rows, skipped = [], []
    raw = manifest_path.read_bytes()
    for lineno, line in enumerate(raw.splitlines(), start=1):
        where = f"{manifest_path}:{lineno}"
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            skipped.append((where, "line is not valid UTF-8"))
            continue
        except json.JSONDecodeError as e:
            skipped.append((where, f"not a JSON object ({e.msg})"))
            continue
        if not isinstance(entry, dict) or "audio_filepath" not in entry or "text" not in entry:
            skipped.append((where, "needs the keys 'audio_filepath' and 'text'"))
            continue
        if not isinstance(entry["text"], str):
            skipped.append((where, "'text' must be a string"))
            continue
        audio = Path(entry["audio_filepath"])
        if not audio.is_absolute():
            audio = manifest_path.parent / audio
        duration = entry.get("duration")
        if duration is not None and (not isinstance(duration, (int, float)) or duration <= 0):
            duration = None  # recomputed from the header
        row, reason = probe_row(audio, entry["text"], duration, where)
        if row is None:
            skipped.append((f"{where} ({audio})", reason))
        else:
            rows.append(row)
    return rows, skipped
