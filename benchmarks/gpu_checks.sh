#!/usr/bin/env bash
# Every CUDA figure BENCHMARKS.md asks for, in one run (minutes on one H100):
#   bash benchmarks/gpu_checks.sh [OUT_DIR [PART ...]]     (PYTHON=... picks the interpreter)
# Parts, in this order by default:
#   precision  training throughput fp32 / tf32 / fp16 / bf16 / bf16+compile and MFU
#              (benchmarks/precision.py) for Conformer-M (the MFU target) and DeepSpeech2-large;
#   attention  the Conformer's fused (SDPA) relative-position attention vs materialised
#              scores at Conformer-M's shape, fp32 and bf16 (benchmarks/attention.py);
#   demo       the README demo (one-batch overfit) trained end to end with trainer.amp=fp16,
#              bf16 and bf16 + trainer.compile=true: its validation WER must fall to ~0 under each;
#   memory     parameters, inference speed and peak memory of a training step per preset;
#   syncs      host-device synchronisations per training step of Conformer-M and DeepSpeech2-large
#              under bf16, counted by the dispatch counter and by CUDA itself (benchmarks/step_anatomy.py);
#   learning   benchmarks/learning.py: the four main recipes, LEARNING_BUDGET s each (default 90),
#              on mini LibriSpeech re-encoded as Ogg/Opus in data/opus/ and the
#              sub-word model in data/spm/ (README, "Does a recipe learn?");
#   plateau    benchmarks/plateau.py on the same data: the first step at which each preset leaves CTC's
#              blank plateau, 300 steps of 120 s batches, dev CER every 50; PLATEAU_PRESETS names them
#              (default: the presets not yet measured on the CPU, Conformer-M/L, FastConformer-M/L,
#              QuartzNet 15x5), PLATEAU_BUDGET caps each (default 100 s), PLATEAU_OVERRIDES adds key=value
#              overrides (arch.args.branch_init=1.0 gives the "before" rows).
# Not by default (parts named on the command line only): syncs, learning, plateau.
# A part that fails is reported and the next one still runs; the exit status is the
# number of failed parts. OUT_DIR (default gpu_checks/) receives at most five files:
# summary.md (everything printed, appended to by every run), the precision JSONs, demo.log, learning.json
# and plateau.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_checks}
shift || true
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(precision attention demo memory)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
exec > >(tee -a "$out/summary.md") 2>&1

precision() {
    "$py" benchmarks/precision.py --preset conformer_m --json "$out/precision_conformer_m.json" &&
    "$py" benchmarks/precision.py --preset deepspeech2_large --modes fp32 tf32 fp16 bf16 \
        --json "$out/precision_deepspeech2_large.json"
}

attention() {
    local amp
    for amp in fp32 bf16; do
        "$py" benchmarks/attention.py --device cuda --amp "$amp" --batch 32 --seconds 16 --steps 20 || return
        echo
    done
}

demo() {
    local runs opts name failed=0
    runs=$(mktemp -d)
    echo "README demo (configs/one_batch_test.json) on CUDA, final validation WER:"
    for opts in "trainer.amp=fp16" "trainer.amp=bf16" "trainer.amp=bf16 trainer.compile=true"; do
        name=$(echo "$opts" | sed 's/[ =.]/_/g')
        echo "### $opts" >> "$out/demo.log"
        # shellcheck disable=SC2086
        if "$py" train.py -c configs/one_batch_test.json trainer.device=cuda trainer.visualize=null \
            trainer.save_dir="$runs" trainer.run_name="$name" $opts >> "$out/demo.log" 2>&1; then
            echo "$opts: $(grep -o '"val_WER (argmax)": [0-9.e-]*' "$runs/$name/metrics.jsonl" | tail -1)"
        else
            echo "$opts: FAILED (the end of demo.log says why)"
            failed=1
        fi
    done
    rm -rf "$runs"
    return $failed
}

memory() {
    "$py" benchmarks/models.py --device cuda --train-batch 16 --train-seconds 16
}

syncs() {
    "$py" benchmarks/step_anatomy.py --device cuda --amp bf16 --presets conformer_m deepspeech2_large \
        --batch 8 --seconds 16 --steps 3 --no-graph-breaks --no-casts
}

mini_librispeech_data() {  # the Opus manifests and the sub-word model that learning and plateau train on
    local m
    for m in data/opus/train-clean-5/manifest.jsonl data/opus/dev-clean-5/manifest.jsonl \
        data/spm/mini_librispeech_bpe128.model; do
        if [ ! -f "$m" ]; then
            echo "no $m: write data/opus with python -m hw_asr.tools.export_manifest and data/spm with" \
                "python -m hw_asr.tools.train_sentencepiece on a machine with mini LibriSpeech (README," \
                "\"Does a recipe learn?\"), then bring data/opus and data/spm along"
            return 1
        fi
    done
}

learning() {
    mini_librispeech_data || return
    "$py" benchmarks/learning.py --device cuda --budget-s "${LEARNING_BUDGET:-90}" --steps 400 \
        --recipes deepspeech2 conformer_xs fastconformer_s quartznet_5x5 \
        --train data/opus/train-clean-5/manifest.jsonl --dev data/opus/dev-clean-5/manifest.jsonl \
        --output "$out/learning.json" data.train.num_workers=4
}

plateau() {
    mini_librispeech_data || return
    # shellcheck disable=SC2086
    "$py" benchmarks/plateau.py --device cuda --budget-s "${PLATEAU_BUDGET:-100}" --steps 300 --eval-every 50 \
        --presets ${PLATEAU_PRESETS:-conformer_m conformer_l fastconformer_m fastconformer_l quartznet_15x5} \
        --train data/opus/train-clean-5/manifest.jsonl --dev data/opus/dev-clean-5/manifest.jsonl \
        --output "$out/plateau.json" data.train.batch_sampler.args.max_batch_seconds=120 \
        data.train.num_workers=8 ${PLATEAU_OVERRIDES:-}
}

for part in "${parts[@]}"; do
    case $part in
        precision | attention | demo | memory | syncs | learning | plateau) ;;
        *) echo "unknown part '$part' (precision, attention, demo, memory, syncs, learning, plateau)"; exit 2 ;;
    esac
done
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 3
failures=0
for part in "${parts[@]}"; do
    echo; echo "## $part ($(date -u +%H:%M:%S) UTC)"
    start=$SECONDS
    if "$part"; then
        echo "## $part: done in $((SECONDS - start)) s"
    else
        echo "## $part: FAILED after $((SECONDS - start)) s"
        failures=$((failures + 1))
    fi
done
exit $failures
