#!/usr/bin/env bash
# Fetch decoding artifacts into data/lm/ (or the folder given as $1): LibriSpeech's
# pruned 3-gram and 4-gram ARPA language models and their vocabulary, from OpenSLR
# resource 11, then prepare them for the decoders (hw_asr.tools.prepare_lm: lower-cased
# ARPA, vocabulary from the 1-gram section as <name>.unigrams.txt, KenLM binary):
#   data/lm/librispeech_3gram_pruned.{arpa,unigrams.txt,bin}
#   data/lm/librispeech_4gram.{arpa,unigrams.txt,bin}
# HW_ASR_ARTIFACTS_PREPARE=0 skips the preparation; HW_ASR_ARTIFACTS_BINARY=0 skips
# the KenLM binaries.
#
# A trained checkpoint is fetched as well when $HW_ASR_CHECKPOINT_URL names one; it
# needs $HW_ASR_CHECKPOINT_SHA256 and lands in checkpoints/.
#
# Each file is downloaded to <name>.part and renamed only when complete and, when a
# sha256 is known for it, verified; a mismatch deletes the download. Files already
# present are kept. Offline, it stops and says where to put the files by hand.
#
# Known sums come from download_artifacts.sha256 beside this script (lines
# "<sha256>  <file name>", as sha256sum writes them) or from $HW_ASR_ARTIFACTS_SHA256.
# $HW_ASR_ARTIFACTS_BASE replaces the download address (a mirror, or file:// for tests).
set -euo pipefail

DEST="${1:-data/lm}"
BASE="${HW_ASR_ARTIFACTS_BASE:-https://www.openslr.org/resources/11}"
FILES=(3-gram.pruned.1e-7.arpa.gz 4-gram.arpa.gz librispeech-vocab.txt)
HERE="$(cd "$(dirname "$0")" && pwd)"
SUMS="${HW_ASR_ARTIFACTS_SHA256-$(cat "$HERE/download_artifacts.sha256" 2>/dev/null || true)}"

if [ -n "${HW_ASR_CHECKPOINT_URL:-}" ] && [ -z "${HW_ASR_CHECKPOINT_SHA256:-}" ]; then
  echo "error: HW_ASR_CHECKPOINT_URL needs HW_ASR_CHECKPOINT_SHA256 (a checkpoint is never kept unverified)" >&2
  exit 1
fi
mkdir -p "$DEST"
expected_sum() {
  printf '%s\n' "$SUMS" | awk -v f="$1" '$2 == f {print $1}'
}

fetch() {
  local url="$1" out="$2" name want got
  name="$(basename "$out")"
  if [ -s "$out" ]; then
    want="$(expected_sum "$name")"
    if [ -n "$want" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" != "$want" ]; then
      echo "error: $out does not match its listed sha256 ($want): delete it and run this script again" >&2
      exit 1
    fi
    echo "have $out"
    return 0
  fi
  echo "downloading $url"
  if ! curl -fL --retry 2 --connect-timeout 20 -o "$out.part" "$url"; then
    rm -f "$out.part"
    echo "error: could not download $url" >&2
    echo "Download it by hand (from $url) and save it as $out, then run this script again." >&2
    exit 1
  fi
  want="$(expected_sum "$name")"
  if [ -n "$want" ]; then
    got="$(sha256sum "$out.part" | cut -d' ' -f1)"
    if [ "$got" != "$want" ]; then
      rm -f "$out.part"
      echo "error: sha256 mismatch for $name (got $got, expected $want); the download was deleted" >&2
      exit 1
    fi
  else
    echo "note: no sha256 is listed for $name; kept unverified" >&2
  fi
  mv "$out.part" "$out"
}

for f in "${FILES[@]}"; do
  fetch "$BASE/$f" "$DEST/$f"
done

if [ -n "${HW_ASR_CHECKPOINT_URL:-}" ]; then
  mkdir -p checkpoints
  ckpt="checkpoints/$(basename "$HW_ASR_CHECKPOINT_URL")"
  SUMS="$(printf '%s\n%s  %s' "$SUMS" "$HW_ASR_CHECKPOINT_SHA256" "$(basename "$ckpt")")"
  fetch "$HW_ASR_CHECKPOINT_URL" "$ckpt"
fi

PY="${PYTHON:-python}"
if [ "${HW_ASR_ARTIFACTS_PREPARE:-1}" != "0" ]; then
  binary=()
  [ "${HW_ASR_ARTIFACTS_BINARY:-1}" = "0" ] && binary=(--no-binary)
  if "$PY" -c "import hw_asr.tools.prepare_lm" 2>/dev/null; then
    "$PY" -m hw_asr.tools.prepare_lm "$DEST/3-gram.pruned.1e-7.arpa.gz" --out "$DEST/librispeech_3gram_pruned" "${binary[@]}"
    "$PY" -m hw_asr.tools.prepare_lm "$DEST/4-gram.arpa.gz" --out "$DEST/librispeech_4gram" "${binary[@]}"
  else
    echo "hw_asr is not importable with $PY: prepare the models with (from the repository, venv active)" >&2
    echo "  python -m hw_asr.tools.prepare_lm $DEST/4-gram.arpa.gz --out $DEST/librispeech_4gram" >&2
  fi
fi
echo "artifacts are in $DEST"
