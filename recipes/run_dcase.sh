#!/usr/bin/env bash
# BN vs L2BN on TAU Urban Acoustic Scenes 2020 Mobile: ResNet-17, FCNN and fsFCNN, end to end.
#
#   bash recipes/run_dcase.sh                                  # quick profile on a synthetic set (CPU)
#   bash recipes/run_dcase.sh --profile paper --data /data/TAU-urban-acoustic-scenes-2020-mobile-development
#   bash recipes/run_dcase.sh --download /data/tau2020 --profile paper --gpus 4
#   bash recipes/run_dcase.sh --stage 3 --stop-stage 4         # re-evaluate and compare only
#
# Stages (each re-runnable; finished work is skipped):
#   0 data      synthetic TAU-format set (default), a local copy (--data), or a download (--download)
#   1 extract   log-mel + deltas into cached shards (asc extract)
#   2 train     models x norms x seeds (asc train; torchrun when --gpus > 1)
#   3 evaluate  per-device/per-scene reports for every run (asc evaluate)
#   4 compare   BN vs L2BN table over seeds (asc compare)
set -euo pipefail

script=run_dcase
task=dcase2020
stage=0
stop_stage=4
profile=quick
models="resnet17 fcnn fsfcnn"
norms="bn l2bn"
seeds="0"
device=auto
gpus=1
jobs=auto
data=""
download=""
preset=small
synth_seed=0
features=features/logmel128_deltas.yaml
cache=cache
exp=""
nj=2
synth=""
overrides=()

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; cat <<EOF2
Options (default):
  --stage N / --stop-stage N   first / last stage to run ($stage / $stop_stage)
  --profile quick|paper        recipe profile ($profile)
  --models "..."               models to train ("$models")
  --norms "..."                norm kinds ("$norms")
  --seeds "..."                seeds ("$seeds")
  --device auto|cpu|cuda       training/extraction device ($device)
  --jobs N                     runs trained/evaluated at once, each on cores/N threads
                               (auto: 2 on a CPU with 2+ cores, else 1)
  --gpus N                     processes per node for training via torchrun ($gpus)
  --data DIR                   an existing TAU 2020 Mobile development folder
  --download DIR               download the dataset into DIR first (stage 0)
  --preset tiny|small|full     size of the synthetic set when no data is given ($preset)
  --synth DIR                  where to build it (data/synth_<preset>_seed<seed>)
  --set KEY=VALUE              recipe override for every run, e.g. train.epochs=10 (repeatable)
  --features YAML              feature config, for extraction and every run ($features)
  --cache DIR                  feature cache root ($cache)
  --exp DIR                    experiment folder (exp/dcase2020_<profile>)
  --nj N                       feature-extraction workers ($nj)
EOF2
}

extra_option() {
  case "$1" in
    --download) download=$2 ;;
    --features) features=$2 ;;
    --cache) cache=$2 ;;
    --nj) nj=$2 ;;
    *) return 1 ;;
  esac
}

# shellcheck source=recipes/stages.sh
source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"
parse_options "$@"
exp=${exp:-exp/dcase2020_${profile}}
setup
[ -f "$features" ] || die "--features $features: no such feature config"
features=$(cd "$(dirname "$features")" && pwd)/$(basename "$features")

given_data=$data
if [ -n "$download" ]; then
  data=$download
elif [ -z "$data" ]; then
  data=${synth:-data/synth_${preset}_seed${synth_seed}}
fi
extract_device=$device
[ "$extract_device" = auto ] && extract_device=cpu
plan_runs

if in_stage 0; then
  stage_begin 0 data
  if [ -n "$download" ]; then
    log "stage 0: download TAU Urban Acoustic Scenes 2020 Mobile into $data"
    asc data download --to "$data"
  elif [ ! -f "$data/meta.csv" ] && [ ! -f "$data/evaluation_setup/fold1_test.csv" ]; then
    [ -z "$given_data" ] || die "--data $given_data: no meta.csv or evaluation_setup/ there; give the folder" \
      "that holds audio/, meta.csv and evaluation_setup/ (or --download DIR to fetch it)"
    log "stage 0: build the synthetic TAU-format set ($preset) in $data"
    asc data synth --out "$data" --preset "$preset" --seed "$synth_seed" --workers "$nj"
  else
    log "stage 0: using the dataset in $data"
  fi
  asc data check "$data" --audio none
  stage_end
fi

if in_stage 1; then
  stage_begin 1 features
  log "stage 1: extract features ($features) into $cache"
  asc extract --data "$data" --features "$features" --out "$cache" --workers "$nj" --device "$extract_device" \
    --splits train,evaluate
  stage_end
fi

if in_stage 2; then
  stage_begin 2 train
  log "stage 2: train ${#run_dirs[@]} run(s): models [$models] x norms [$norms] x seeds [$seeds], profile $profile"
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
  log "stage 4: compare BN and L2BN"
  asc compare "${run_dirs[@]}" --out "$exp/compare"
  log "comparison report: $exp/compare/compare.md"
  stage_end
fi
stage_times
