#!/usr/bin/env bash
# BN vs L2BN on acoustic scenes (TAU 2020 or 2022 Mobile, or your own labelled audio): ResNet-17, FCNN
# and fsFCNN, end to end.
#
#   bash recipes/run_dcase.sh                                  # quick profile on a synthetic set (CPU)
#   bash recipes/run_dcase.sh --profile paper --data /data/TAU-urban-acoustic-scenes-2020-mobile-development
#   bash recipes/run_dcase.sh --download /data/tau2020 --profile paper --gpus 4
#   bash recipes/run_dcase.sh --dataset tau2022                # 1-s clips: a synthetic TAU 2022 set
#   bash recipes/run_dcase.sh --data my_sounds/                # a folder per class, or a CSV manifest
#   bash recipes/run_dcase.sh --stage 3 --stop-stage 4         # re-evaluate and compare only
#   bash recipes/run_dcase.sh --models fcnn --seeds "0 1 2" --variants "bn l2bn bn+freq_mixstyle l2bn+freq_mixstyle"
#
# Stages (each re-runnable; finished work is skipped):
#   0 data      synthetic set (default), a local copy (--data), or a download (--download)
#   1 extract   log-mel + deltas into cached shards (asc extract)
#   2 train     models x norms (or variants) x seeds (asc train; torchrun when --gpus > 1)
#   3 evaluate  per-device/per-scene reports for every run (asc evaluate)
#   4 compare   BN vs L2BN table over seeds (asc compare); with --variants, each against the first
set -euo pipefail

script=run_dcase
task=dcase2020
stage=0
stop_stage=4
last_stage=4
profile=quick
models="resnet17 fcnn fsfcnn"
norms="bn l2bn"
variants=""
seeds="0"
device=auto
gpus=1
jobs=auto
data=""
dataset=""
train_subset=""
download=""
preset=small
synth_seed=0
features=features/logmel128_deltas.yaml
cache=""
exp=""
nj=2
synth=""
overrides=()

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; cat <<EOF2
Options (default):
  --stage N / --stop-stage N   first / last stage to run ($stage / $stop_stage)
  --profile quick|paper        recipe profile ($profile)
  --models "..."               models to train ("$models")
  --norms "..."                norm kinds ("$norms")
  --variants "..."             instead of --norms: variants NORM[+TRANSFORM...], e.g. "bn l2bn bn+freq_mixstyle";
                               +TRANSFORM appends that augmentation (default parameters) to the recipe's own;
                               run folders are named by the variant; stage 4 pairs each with the first
  --seeds "..."                seeds ("$seeds")
  --device auto|cpu|cuda       training/extraction device ($device)
  --jobs N                     runs trained/evaluated at once, each on cores/N threads
                               (auto: 2 on a CPU with 2+ cores, else 1)
  --gpus N                     processes per node for training via torchrun ($gpus)
  --dataset NAME               tau2020, tau2022, folder or csv (default: detected from --data; tau2020
                               when no --data is given)
  --data DIR                   an existing dataset: a TAU 2020/2022 Mobile folder, a folder with one
                               subfolder per class, or a manifest CSV
  --train-subset FILE          TAU 2022: train on this subset, e.g. split25.csv
  --download DIR               download the TAU 2020 or 2022 development set into DIR first (stage 0)
  --preset tiny|small|full     size of the synthetic set when no data is given ($preset)
  --synth DIR                  where to build it (data/synth_<preset>_seed<seed>)
  --set KEY=VALUE              recipe override for every run, e.g. train.epochs=10 (repeatable)
  --features YAML              feature config, for extraction and every run ($features)
  --cache DIR                  feature cache root (cache; cache/<dataset> for other datasets)
  --exp DIR                    experiment folder (exp/dcase2020_<profile>; exp/<dataset>_<profile>)
  --nj N                       feature-extraction workers ($nj)
EOF2
}

extra_option() {
  case "$1" in
    --download) download=$2 ;;
    --dataset) dataset=$2 ;;
    --train-subset) train_subset=$2 ;;
    --features) features=$2 ;;
    --cache) cache=$2 ;;
    --nj) nj=$2 ;;
    --variants) [ -n "${2//[[:space:]]/}" ] || die "--variants needs at least one variant, e.g. \"bn l2bn\""
                variants=$2 ;;
    *) return 1 ;;
  esac
}

# shellcheck source=recipes/stages.sh
source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"
norms_given=""
for arg in "$@"; do [ "$arg" != --norms ] || norms_given=1; done
parse_options "$@"
if [ -n "$variants" ] && [ -n "$norms_given" ]; then
  die "--variants and --norms both say what to train: give the plain norms among the variants" \
    "(e.g. --variants \"bn l2bn bn+freq_mixstyle\")"
fi
case "$dataset" in ""|tau2020|tau2022|folder|csv) ;; *) die "--dataset must be tau2020, tau2022, folder or csv" ;; esac
[ -z "$download" ] || case "$dataset" in ""|tau2020|tau2022) ;; *) die "--download fetches tau2020 or tau2022" ;; esac
setup
if [ -n "$data" ] && [ -z "$dataset" ]; then  # the reader the data needs, as `asc extract` will detect it
  [ -e "$data" ] || die "--data $data: no such folder or file; give a TAU folder (audio/, meta.csv," \
    "evaluation_setup/), a folder with one subfolder per class, or a manifest CSV"
  detected=$("$py" -c 'import sys; from asc.data.readers import detect_reader; print(detect_reader(sys.argv[1]))' \
    "$data" 2>&1) || die "${detected##*DataError: }"
else
  detected=${dataset:-tau2020}
fi
# where experiments and caches go: TAU 2020 where they always went; other data under its own name
if [ "$detected" = tau2020 ]; then
  exp_name=dcase2020; cache_default=cache
else
  exp_name=$detected
  if [ -n "$data" ] && [ "$detected" != tau2022 ]; then exp_name=$(basename "${data%/}"); exp_name=${exp_name%.csv}; fi
  cache_default=cache/$exp_name
fi
exp=${exp:-exp/${exp_name}_${profile}}
cache=${cache:-$cache_default}
[ -f "$features" ] || die "--features $features: no such feature config"
features=$(cd "$(dirname "$features")" && pwd)/$(basename "$features")

given_data=$data
synth_args=()
case "$dataset" in
  tau2022) synth_name=synth2022; synth_args=(--duration 2) ;;  # two 1-s clips a recording
  folder) synth_name=synth_folder ;;
  csv) [ -n "$data" ] || die "--dataset csv needs --data FILE.csv" ; synth_name=synth ;;
  *) synth_name=synth ;;
esac
if [ -n "$download" ]; then
  data=$download
elif [ -z "$data" ]; then
  data=${synth:-data/${synth_name}_${preset}_seed${synth_seed}}
fi
reader=()
[ -z "$dataset" ] || reader=(--dataset "$dataset")
subset=()
[ -z "$train_subset" ] || subset=(--train-subset "$train_subset")
extract_device=$device
[ "$extract_device" = auto ] && extract_device=cpu
plan_runs

if in_stage 0; then
  stage_begin 0 data
  if [ -n "$download" ]; then
    log "stage 0: download ${dataset:-tau2020} (development set) into $data"
    asc data download --dataset "${dataset:-tau2020}" --to "$data"
  elif [ -z "$given_data" ] && [ ! -f "$data/SYNTHETIC.json" ]; then
    log "stage 0: build a synthetic set (${dataset:-tau2020} layout, $preset) in $data"
    asc data synth --out "$data" --preset "$preset" --seed "$synth_seed" --workers "$nj" \
      --layout "${dataset:-tau2020}" "${synth_args[@]}"
  else
    [ -e "$data" ] || die "--data $data: no such folder or file; give a TAU folder (audio/, meta.csv," \
      "evaluation_setup/), a folder with one subfolder per class, or a manifest CSV"
    log "stage 0: using the dataset in $data"
  fi
  asc data check "$data" --audio none "${reader[@]}" "${subset[@]}"
  stage_end
fi

if in_stage 1; then
  stage_begin 1 features
  log "stage 1: extract features ($features) into $cache"
  asc extract --data "$data" --features "$features" --out "$cache" --workers "$nj" --device "$extract_device" \
    --splits train,evaluate "${reader[@]}" "${subset[@]}"
  stage_end
fi

if in_stage 2; then
  stage_begin 2 train
  axis="norms [$norms]"
  [ -z "$variants" ] || axis="variants [$variants]"
  log "stage 2: train ${#run_dirs[@]} run(s): models [$models] x $axis x seeds [$seeds], profile $profile"
  # the same features the cache holds, whatever the recipe names
  log "  $(estimate_stages --set "features=$features" --set "data.cache=$cache")"
  train_all --set "features=$features" --set "data.cache=$cache"
  stage_end
fi

if in_stage 3; then
  stage_begin 3 evaluate
  log "stage 3: evaluate ${#run_dirs[@]} run(s)"
  evaluate_runs "${run_dirs[@]}"
  stage_end
fi

if in_stage 4; then
  stage_begin 4 compare
  if [ -n "$variants" ]; then
    read -r baseline _ <<<"$variants"
    log "stage 4: compare the variants against $baseline"
    asc compare "${run_dirs[@]}" --out "$exp/compare" --baseline "$baseline"
  else
    log "stage 4: compare BN and L2BN"
    asc compare "${run_dirs[@]}" --out "$exp/compare"
  fi
  log "comparison report: $exp/compare/compare.md"
  stage_end
fi
stage_times
