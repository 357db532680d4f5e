"""Rewrite ensemble configs or ensemble files that use the old confidence key
``measure_cfg`` to the current ``method_cfg``, in place (the original is kept as
``<file>.bak``).

    python -m hw_asr.ensemble.migrate configs/old_ensemble.json old_ensemble.pth
"""

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hw_asr.checkpoint import CheckpointError, save_checkpoint
from hw_asr.ensemble.confidence import migrate_confidence
from hw_asr.ensemble.ensemble import load_ensemble_state
from hw_asr.files import write_json


def back_up_and_write(path: Path, write: Callable[[Path], object]) -> None:
    """Keep the original as ``<file>.bak``, then ``write(path)`` the migrated content."""
    shutil.copy2(path, path.with_name(path.name + ".bak"))
    write(path)


def migrate_json(path: Path) -> bool:
    cfg = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for key in ("confidence", "confidence_cfg"):
        if isinstance(cfg.get(key), dict):
            cfg[key], c = migrate_confidence(cfg[key], key)
            changed |= c
    if "confidence_cfg" in cfg and "confidence" not in cfg:  # older name of the whole block
        cfg["confidence"] = cfg.pop("confidence_cfg")
        changed = True
    if changed:
        back_up_and_write(path, lambda p: write_json(p, cfg))
    return changed


def migrate_ensemble_file(path: Path) -> bool:
    state = load_ensemble_state(path)
    state["confidence"], changed = migrate_confidence(state["confidence"])
    if changed:
        back_up_and_write(path, lambda p: save_checkpoint(state, p))
    return changed


def migrate(path: str | os.PathLike) -> bool:
    """True when ``path`` was rewritten, False when it was already current."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"not found: {path}")
    return migrate_json(path) if path.suffix == ".json" else migrate_ensemble_file(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    status = 0
    for f in args.files:
        try:
            done = migrate(f)
            print(f"{f}: {'migrated measure_cfg -> method_cfg (original kept as .bak)' if done else 'already current'}")
        except (OSError, ValueError, CheckpointError) as e:
            print(f"{f}: error: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
