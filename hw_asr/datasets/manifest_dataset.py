"""NeMo-style JSON-lines manifests: one ``{"audio_filepath", "text", "duration"}`` per line."""

import json
from pathlib import Path

from hw_asr.datasets.base_dataset import BaseDataset, file_signature, probe_row


def read_manifest(manifest_path):
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


class ManifestDataset(BaseDataset):
    """One or several JSON-lines manifests (``manifest_path``: a path or a list of paths)."""

    def __init__(self, manifest_path, **kwargs):
        paths = manifest_path if isinstance(manifest_path, (list, tuple)) else [manifest_path]
        self.manifests = [Path(p) for p in paths]
        for p in self.manifests:
            if not p.is_file():
                raise FileNotFoundError(f"manifest not found: {p}")
        super().__init__(**kwargs)

    def describe(self):
        return f"{self.name}({', '.join(map(str, self.manifests))})"

    def _index_signature(self):
        return [file_signature(p.resolve()) for p in self.manifests]

    def _build_index(self):
        rows, skipped = [], []
        for p in self.manifests:
            r, s = read_manifest(p)
            rows += r
            skipped += s
        return rows, skipped
