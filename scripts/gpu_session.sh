#!/usr/bin/env bash
# Two GPU runs of ConfounderGAN on CIFAR-10, each time-boxed, for anyone with one GPU and about ten minutes.
#
#   generator  trains a generator on CIFAR-10 rows 0-24,999 against a ResNet-18 surrogate (bf16, batch 256) with a
#              120-epoch label predictor, then measures it as the shipped weights are measured
#              (docs/results.md): victims test_resnet (10 epochs) and test_byobnet (20), with and without labels,
#              on rows it saw (0-9,999) and rows it never saw (25,000-34,999), the first 2,000 test images.
#   benchmark  the full benchmark protocol's ResNet-18 column (CIFAR stem, 15 epochs, batch 512): all 50,000
#              training and 10,000 test images, no defense, the methods in the order below until the time is up.
#
# Usage, from the repository root:
#     bash scripts/gpu_session.sh generator benchmark      # one part or both
#     bash scripts/gpu_session.sh prepare                  # optional, with network: data and wheels for an
#                                                          # offline GPU machine (folders gpu-data/ and .whl/)
#     SMOKE=1 OUT=/tmp/gpu-smoke bash scripts/gpu_session.sh generator benchmark   # the same steps, tiny, on CPU
# DATA picks the dataset (default: gpu-data/cifar10 when prepared, else ../shared/data/cifar10). Logs, reports and
# the trained generator are packed into $OUT/gpu-session.tar.gz after each part (default OUT: runs/gpu-out).
set -euo pipefail

RUNS=runs/gpu
OUT=${OUT:-runs/gpu-out}
if [[ -z ${DATA:-} ]]; then
  DATA=../shared/data/cifar10
  [[ -d gpu-data/cifar10 ]] && DATA=gpu-data/cifar10
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [[ ${SMOKE:-0} == 1 ]]; then
  RUNS=runs/gpu-smoke
  GENERATOR=(--train_rows 0:512 --max_train_minutes 0.1 --label_predictor 16 1)
  SEEN=0:256 UNSEEN=25000:25256 TEST=0:256 RESNET_EPOCHS=1 BYOB_EPOCHS=1 BENCHMARK_MINUTES=0.5
  BENCHMARK=(--train_rows 0:512 --test_rows 0:256 --victims test_resnet:1 --options batch_size=512 learning_rate=0.2
             em_rounds=1 em_train_steps=1 em_steps=1 tap_epochs=1 tap_steps=1 confounder_steps=2)
else
  GENERATOR=(--train_rows 0:25000 --max_train_minutes 2.5 --label_predictor 16 120)
  SEEN=0:10000 UNSEEN=25000:35000 TEST=0:2000 RESNET_EPOCHS=10 BYOB_EPOCHS=20 BENCHMARK_MINUTES=4
  BENCHMARK=(--victims resnet18:15 --bf16_victims resnet18 --options batch_size=512 learning_rate=0.2)
fi

prepare() {
  mkdir -p gpu-data/cifar10 .whl
  # Rewritten with parquet's default compression: the same rows and image bytes in 21 MB instead of 54.
  python3 -c "
import pyarrow.parquet as pq
for split in ('train', 'test'):
    name = f'{split}-00000-of-00001.parquet'
    pq.write_table(pq.read_table(f'../shared/data/cifar10/{name}'), f'gpu-data/cifar10/{name}')"
  # Wheels of the installed versions of the packages a bare PyTorch image lacks.
  local wheels=()
  for name in diffusers datasets dill multiprocess importlib_metadata kornia kornia_rs; do
    wheels+=("$name==$(python3 -c "from importlib.metadata import version; print(version('$name'))")")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${wheels[@]}"
  du -sh gpu-data .whl
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
  python3 -m training.evaluate --dataset_name "$DATA" --model "$RUNS/cifar10-resnet18" \
    --train_rows "$1" --test_rows "$TEST" --victims "$2" --epochs "$3" --settings labels label-free \
    --output_json "$RUNS/$4.json"
}

generator() {
  python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    -m training.train --dataset_name "$DATA" "${GENERATOR[@]}" --surrogate_model resnet18 \
    --train_batch_size 256 --num_train_epochs 100 \
    --checkpointing_steps 1000000 --output_dir "$RUNS/cifar10-resnet18"
  for rows in seen unseen; do
    local range=$SEEN; [[ $rows == unseen ]] && range=$UNSEEN
    evaluate "$range" test_resnet "$RESNET_EPOCHS" "eval_gpu_test_resnet_$rows"
    evaluate "$range" test_byobnet "$BYOB_EPOCHS" "eval_gpu_test_byobnet_$rows"
  done
}

benchmark() {
  # The shipped generator and clean data first, then the methods by the time they take to make: the time limit
  # drops the last ones, and a protected set that overruns it is cut by `timeout` (exit code 124; results.json
  # keeps every run so far). Any other failure stops the session.
  timeout $((60 * ${BENCHMARK_MINUTES%.*} + 90)) python3 -m training.benchmark --protocol full --dataset_name "$DATA" \
    "${BENCHMARK[@]}" --time_limit_minutes "$BENCHMARK_MINUTES" \
    --methods clean confounder confounder-label-free random patch classwise em tap confounder-trained \
    --defenses none --cache_dir "$RUNS/benchmark-cache" --output_dir "$RUNS/benchmark-full-resnet18" || [[ $? == 124 ]]
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
    echo "unknown part '$part': the parts are 'generator' and 'benchmark' ('prepare' alone, with network)" >&2
    exit 2
  fi
done
if [[ $# == 0 ]]; then
  echo "usage: bash scripts/gpu_session.sh prepare | PART... (PART: generator, benchmark; see the header)" >&2
  exit 2
fi
setup
trap pack EXIT  # on an error too; and after each part, since a process killed by a caller's timeout runs no trap
for part in "$@"; do
  (set -x; "$part") 2>&1 | tee -a "$OUT/session.log"
  pack
done
