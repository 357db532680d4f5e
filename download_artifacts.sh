#!/usr/bin/env bash
# Fetch decoding artifacts into data/lm/ (or the folder given as $1):
# LibriSpeech's pruned 3-gram and 4-gram ARPA language models and their vocabulary,
# from OpenSLR resource 11. Each file is downloaded to <name>.part and renamed only
# when complete, so an interrupted run never leaves a partial file in place of a good
# one; files already present are kept. Offline, it stops and says where to put them.
set -euo pipefail

DEST="${1:-data/lm}"
BASE="https://www.openslr.org/resources/11"
FILES=(3-gram.pruned.1e-7.arpa.gz 4-gram.arpa.gz librispeech-vocab.txt)

mkdir -p "$DEST"
fetch() {
  local url="$1" out="$2"
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
  mv "$out.part" "$out"
}

for f in "${FILES[@]}"; do
  fetch "$BASE/$f" "$DEST/$f"
done
echo "artifacts are in $DEST"
