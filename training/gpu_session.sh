#!/usr/bin/env bash
# The GPU-only parts of the open issues, prepared for a machine lent for a fixed time (one NVIDIA H200, 15 minutes
# of device time per task, starts included). Every step is time-boxed and writes what it has when its time is up.
#
#   generator  issue 3: a generator trained on all 25,000 images (CIFAR-10 rows 0-24,999) with a ResNet-18
#              surrogate (the shipped one: test_resnet), then measured like the shipped one: victims test_resnet
#              (10 epochs) and test_byobnet (20), with and without labels, on rows it saw (0-9,999) and rows it
#              never saw (25,000-34,999), the first 2,000 test images. About 5 minutes.
#   benchmark  issue 4: the full protocol's ResNet-18 column (CIFAR stem, 15 epochs, batch 512): all 50,000
#              training and 10,000 test images, methods in order of interest until its time is up. About 5 minutes.
#
# Here, once (CPU): copies the data and the wheels the device image lacks into ignored folders that travel:
#     bash training/gpu_session.sh prepare
# There (the device tool's `run`, carry ["gpu-data", ".whl"], timeout_s 600): one part per call, or both
# when the time left allows (about 10 minutes):
#     bash training/gpu_session.sh generator
#     bash training/gpu_session.sh benchmark
# Everything comes back as one archive, $OUT/gpu-session.tar.gz (logs, reports, the trained generator); unpack it
# into runs/gpu/ here. A dry run of the same steps on tiny budgets, to check the script before spending device time:
#     SMOKE=1 OUT=/tmp/gpu-smoke bash training/gpu_session.sh generator benchmark
set -euo pipefail

DATA=gpu-data/cifar10
RUNS=runs/gpu
OUT=${OUT:-runs/gpu-out}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [[ ${SMOKE:-0} == 1 ]]; then  # the same commands, sized for a CPU minute
  RUNS=runs/gpu-smoke
  GENERATOR=(--max_train_samples 512 --max_train_minutes 0.1 --label_predictor_epochs 1)
  SEEN=0:256 UNSEEN=25000:25256 TEST=0:256 RESNET_EPOCHS=1 BYOB_EPOCHS=1 BENCHMARK_MINUTES=0.5
  BENCHMARK=(--train_rows 0:512 --test_rows 0:256 --victims test_resnet:1 --em_rounds 1 --em_train_steps 1
             --em_steps 1 --tap_epochs 1 --tap_steps 1 --confounder_steps 2)
else
  GENERATOR=(--max_train_samples 25000 --max_train_minutes 2.5 --label_predictor_epochs 120)
  SEEN=0:10000 UNSEEN=25000:35000 TEST=0:2000 RESNET_EPOCHS=10 BYOB_EPOCHS=20 BENCHMARK_MINUTES=4
  BENCHMARK=(--victims resnet18:15 --bf16_victims resnet18)
fi

prepare() {
  mkdir -p "$DATA" .whl
  # Rewritten with parquet's default compression: the same rows and image bytes in 21 MB instead of 54 (each
  # image's JPEG headers repeat), so the whole dataset travels.
  python3 -c "
import pyarrow.parquet as pq
for split in ('train', 'test'):
    name = f'{split}-00000-of-00001.parquet'
    pq.write_table(pq.read_table(f'../shared/data/cifar10/{name}'), f'$DATA/{name}')"
  # Not in the device image (its package list: /work/.library/device/KINDS.md); the versions installed here.
  local wheels=()
  for name in diffusers datasets dill multiprocess importlib_metadata kornia kornia_rs; do
    wheels+=("$name==$(python3 -c "from importlib.metadata import version; print(version('$name'))")")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${wheels[@]}"
  du -sh "$DATA" .whl
}

setup() {
  mkdir -p "$OUT" "$RUNS"
  if [[ -d .whl ]] && ! python3 -c "import datasets, diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD:${PYTHONPATH:-}
  python3 -c "import torch, timm, datasets, diffusers, accelerate; print('torch', torch.__version__, 'timm', timm.__version__,
    'datasets', datasets.__version__, 'diffusers', diffusers.__version__, 'device',
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee -a "$OUT/session.log"
}

evaluate() {  # rows victims epochs report
  python3 training/evaluate_unlearnability.py --dataset_name "$DATA" --generator "$RUNS/cifar10-resnet18" \
    --train_rows "$1" --test_rows "$TEST" --victims "$2" --epochs "$3" --settings labels label-free \
    --output_json "$RUNS/$4.json"
}

generator() {
  python3 training/train_confounder.py --dataset_name "$DATA" "${GENERATOR[@]}" --surrogate_model resnet18 \
    --mixed_precision bf16 --train_batch_size 256 --num_train_epochs 100 --label_predictor_width 16 \
    --checkpointing_steps 1000000 --output_dir "$RUNS/cifar10-resnet18"
  for rows in seen unseen; do
    local range=$SEEN; [[ $rows == unseen ]] && range=$UNSEEN
    evaluate "$range" test_resnet "$RESNET_EPOCHS" "eval_gpu_test_resnet_$rows"
    evaluate "$range" test_byobnet "$BYOB_EPOCHS" "eval_gpu_test_byobnet_$rows"
  done
}

benchmark() {
  # The product and the reference first, then the methods by the time they take to make: the time limit drops
  # the last ones, and a protected set that overruns it is cut by `timeout` (results.json keeps every run so far;
  # any other failure stops the session).
  timeout $((60 * ${BENCHMARK_MINUTES%.*} + 90)) python3 training/benchmark.py --protocol full --dataset_name "$DATA" \
    "${BENCHMARK[@]}" --batch_size 512 --learning_rate 0.2 --time_limit_minutes "$BENCHMARK_MINUTES" \
    --methods clean confounder confounder-label-free random patch classwise em tap confounder-trained \
    --defenses none --cache_dir "$RUNS/benchmark-cache" --output_dir "$RUNS/benchmark-full-resnet18" || [[ $? == 124 ]]  # 124: cut by timeout, not a failure
}

pack() {
  tar -czf "$OUT/gpu-session.tar.gz" --exclude "checkpoint-*" --exclude "benchmark-cache" -C "$RUNS" .
  ls -la "$OUT"
}

if [[ ${1:-} == prepare ]]; then
  prepare
  exit
fi
for part in "$@"; do  # every name checked before anything is installed or run
  if [[ $part != generator && $part != benchmark ]]; then
    echo "unknown part '$part': run 'prepare' here, then 'generator' and/or 'benchmark' on the GPU" >&2
    exit 2
  fi
done
if [[ $# == 0 ]]; then
  echo "usage: bash training/gpu_session.sh prepare | PART... (PART: generator, benchmark; see the header)" >&2
  exit 2
fi
setup
trap pack EXIT  # on an error too; and after each part, since a call stopped at its timeout_s runs no trap
for part in "$@"; do
  (set -x; "$part") 2>&1 | tee -a "$OUT/session.log"
  pack
done
