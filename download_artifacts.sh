#!/usr/bin/env bash
# Fetch decoding artifacts into data/lm/ (or the folder given as $1): LibriSpeech's
# pruned 3-gram and 4-gram ARPA language models and their vocabulary, from OpenSLR
# resource 11.
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
SUMS="${HW_ASR_ARTIFACTS_SHA256:-$(cat "$HERE/download_artifacts.sha256" 2>/dev/null || true)}"

mkdir -p "$DEST"
expected_sum() {
  printf '%s\n' "$SUMS" | awk -v f="$1" '$2 == f {print $1}'
}

fetch() {
  local url="$1" out="$2" name want got
  name="$(basename "$out")"
  if [ -s "$out" ]; then
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
  fi
  mv "$out.part" "$out"
}

for f in "${FILES[@]}"; do
  fetch "$BASE/$f" "$DEST/$f"
done
echo "artifacts are in $DEST"
