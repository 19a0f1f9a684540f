#!/usr/bin/env bash
# The measurements behind the owner-key results (docs/results.md, "Owner keys"): a keyed generator on CIFAR-10 (the
# JPEG-q75 copy in ../shared/data/cifar10), judged by victims of other families than its test_resnet surrogate:
# test_byobnet and the depthwise mobilenetv3_small_100. Every key is new to the generator (training draws random
# key codes; these runs hash secrets fixed by the seed). On 2 CPU cores it runs two 1-thread jobs at a time,
# a little over an hour; reports go to $OUT.
#
#     bash scripts/keys_measurements.sh                 # all of it
#     bash scripts/keys_measurements.sh owners speed    # some parts: classes, owners, one-owner, clothing, removal, speed
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10}
MODEL=${MODEL:-modeling_confounder/keyed_model}
OUT=${OUT:-results/keys}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"

classes() {  # each class one owner with its own key, on rows the generator trained on and rows it never saw
  for rows in seen:0:10000 unseen:25000:35000; do
    python -m training.evaluate --dataset_name "$DATA" --model "$MODEL" --train_rows "${rows#*:}" \
      --test_rows 0:2000 --settings labels --victims test_byobnet mobilenetv3_small_100 \
      --bf16_victims test_byobnet --epochs 20 --seeds 0 1 2 --output_json "$OUT/eval_keyed_${rows%%:*}.json" &
  done
  wait
}

owners() {  # 100 owners on unrelated content: can a victim name the owner of new images? (keys, then 10 codes;
            # victims trained 12 epochs, then 30 and 60, as the shorter victims were still learning:
            # OWNER_EPOCHS="60" runs one length)
  for epochs in ${OWNER_EPOCHS:-12 30 60}; do
    suffix=$([[ $epochs == 12 ]] || echo "-$epochs-epochs")
    for model in "$MODEL" modeling_confounder/cifar10_model; do
      python -m training.owners --dataset_name "$DATA" --model "$model" --owners 100 --train_rows 0:10000 \
        --test_rows 0:2000 --victims test_byobnet --bf16_victims test_byobnet --epochs "$epochs" --seeds 0 1 2 \
        --output_json "$OUT/owners-$(basename "$model" | tr _ -)$suffix.json" &
    done
    wait
  done
}

one_owner() {  # one class protected with its key, the other nine clean
  for seed in 0 1 2; do
    OMP_NUM_THREADS=2 python -m training.benchmark --protocol quick --model "$MODEL" \
      --methods clean confounder-keyed --defenses none one-class --defense_methods confounder-keyed \
      --victims test_byobnet --train_rows 0:10000 --victim_seeds "$seed" \
      --options seed="$seed" validation_rows=0 --output_dir "$OUT/one-owner-seed$seed"
  done
}

clothing() {  # real phone photos, resized to 64 px before protection; balanced accuracy (summarize --balanced)
  for setting in clean:"" labels:_keys; do
    python -m training.evaluate --dataset_name "${DATA%/*}/clothing" --resolution 64 --model "$MODEL" \
      --settings "${setting%%:*}" --victims test_byobnet --bf16_victims test_byobnet --epochs 20 --seeds 0 1 2 \
      --output_json "$OUT/clothing64_test_byobnet${setting#*:}.json" &
  done
  wait
}

removal() {  # what someone who learns a key can remove from photos protected with it
  python -m training.key_removal --model "$MODEL" examples/*.png --output_json "$OUT/key-removal.json"
}

speed() {  # five runs with nothing else running; --summarize gives the median
  for run in 1 2 3 4 5; do
    OMP_NUM_THREADS=2 python -m training.speed --model "$MODEL" --output_json "$OUT/speed-$run.json"
  done
  python -m training.speed --summarize "$OUT"/speed-[1-5].json > "$OUT/speed-summary.json"
}

parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(classes owners one_owner clothing removal speed)
for part in "${parts[@]}"; do  # every name is checked before anything runs
  case "${part//-/_}" in
    classes|owners|one_owner|clothing|removal|speed) ;;
    *) echo "unknown part '$part': the parts are classes, owners, one-owner, clothing, removal and speed" >&2; exit 2 ;;
  esac
done
for part in "${parts[@]}"; do
  "${part//-/_}"
done
