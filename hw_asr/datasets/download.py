"""Fetching and unpacking corpora, never leaving a partial file in place of a good one."""

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    pass


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, manual_hint: str = "") -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; renamed only when complete and verified."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(part, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            digest = hashlib.sha256()
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {e}. {manual_hint}".strip()) from None
    if sha256 is not None and digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: sha256 mismatch (got {digest.hexdigest()}, expected {sha256}); "
            f"nothing was kept. {manual_hint}".strip()
        )
    os.replace(part, dest)
    return dest


def download_and_extract(url: str, target_dir: str | os.PathLike, manual_hint: str = "") -> None:
    """Fetch an archive into ``target_dir`` and unpack it there; the archive is removed after."""
    target_dir = Path(target_dir)
    archive = target_dir / url.rsplit("/", 1)[-1]
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]  # deepest first
    logger.info("downloading %s to %s", url, target_dir)
    try:
        download_file(url, archive, manual_hint=manual_hint)
    except DownloadError:
        for folder in created:  # a failed download leaves no empty folders behind
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    tmp = target_dir / (archive.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    for child in tmp.iterdir():
        final = target_dir / child.name
        if final.exists():
            # merge: e.g. several LibriSpeech parts share the LibriSpeech/ folder
            for sub in child.iterdir():
                if not (final / sub.name).exists():
                    os.replace(sub, final / sub.name)
        else:
            os.replace(child, final)
    shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink(missing_ok=True)
