#!/usr/bin/env bash
# Every CUDA figure BENCHMARKS.md asks for, in one run (minutes on one H100):
#   bash benchmarks/gpu_checks.sh [OUT_DIR]        (PYTHON=... picks the interpreter)
# 1. training throughput fp32 / tf32 / fp16 / bf16 / bf16+compile and MFU (benchmarks/precision.py)
#    for Conformer-M (the MFU target) and DeepSpeech2-large; the Conformer's fused (SDPA)
#    relative-position attention vs materialised scores at Conformer-M's shape (benchmarks/attention.py);
# 2. the README demo (one-batch overfit) trained end to end with trainer.amp=fp16, bf16
#    and bf16 + trainer.compile=true: its validation WER must fall to ~0 under each;
# 3. parameters, inference speed and peak memory of a training step per preset.
# OUT_DIR (default gpu_checks/) receives four files: summary.md (everything printed),
# the two benchmarks' JSON and demo.log (the three training logs).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_checks}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
exec > >(tee "$out/summary.md") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

"$py" benchmarks/precision.py --preset conformer_m --json "$out/precision_conformer_m.json"
"$py" benchmarks/precision.py --preset deepspeech2_large --modes fp32 tf32 fp16 bf16 \
    --json "$out/precision_deepspeech2_large.json"
for amp in fp32 bf16; do
    echo; "$py" benchmarks/attention.py --device cuda --amp "$amp" --batch 32 --seconds 16 --steps 20
done

runs=$(mktemp -d)
echo; echo "README demo (configs/one_batch_test.json) on CUDA, final validation WER:"
for opts in "trainer.amp=fp16" "trainer.amp=bf16" "trainer.amp=bf16 trainer.compile=true"; do
    name=$(echo "$opts" | sed 's/[ =.]/_/g')
    echo "### $opts" >> "$out/demo.log"
    # shellcheck disable=SC2086
    "$py" train.py -c configs/one_batch_test.json trainer.device=cuda trainer.visualize=null \
        trainer.save_dir="$runs" trainer.run_name="$name" $opts >> "$out/demo.log" 2>&1
    echo "$opts: $(grep -o '"val_WER (argmax)": [0-9.e-]*' "$runs/$name/metrics.jsonl" | tail -1)"
done
rm -rf "$runs"

echo
"$py" benchmarks/models.py --device cuda --train-batch 16 --train-seconds 16
