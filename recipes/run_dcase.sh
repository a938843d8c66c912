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

stage=0
stop_stage=4
profile=quick
models="resnet17 fcnn fsfcnn"
norms="bn l2bn"
seeds="0"
device=auto
gpus=1
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

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; cat <<EOF
Options (default):
  --stage N / --stop-stage N   first / last stage to run ($stage / $stop_stage)
  --profile quick|paper        recipe profile ($profile)
  --models "..."               models to train ("$models")
  --norms "..."                norm kinds ("$norms")
  --seeds "..."                seeds ("$seeds")
  --device auto|cpu|cuda       training/extraction device ($device)
  --gpus N                     processes per node for training via torchrun ($gpus)
  --data DIR                   an existing TAU 2020 Mobile development folder
  --download DIR               download the dataset into DIR first (stage 0)
  --preset tiny|small|full     size of the synthetic set when no data is given ($preset)
  --synth DIR                  where to build it (data/synth_<preset>_seed<seed>)
  --set KEY=VALUE              recipe override for every run, e.g. train.epochs=10 (repeatable)
  --features YAML              feature config ($features)
  --cache DIR                  feature cache root ($cache)
  --exp DIR                    experiment folder (exp/dcase2020_<profile>)
  --nj N                       feature-extraction workers ($nj)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --norms) norms=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --download) download=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --synth) synth=$2; shift 2 ;;
    --set) overrides+=(--set "$2"); shift 2 ;;
    --features) features=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_dcase.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
exp=${exp:-exp/dcase2020_${profile}}

py=$(bash scripts/setup.sh)
script=run_dcase
# shellcheck source=recipes/stages.sh
source recipes/stages.sh

given_data=$data
if [ -n "$download" ]; then
  data=$download
elif [ -z "$data" ]; then
  data=${synth:-data/synth_${preset}_seed${synth_seed}}
fi
extract_device=$device
[ "$extract_device" = auto ] && extract_device=cpu

if in_stage 0; then
  if [ -n "$download" ]; then
    log "stage 0: download TAU Urban Acoustic Scenes 2020 Mobile into $data"
    asc data download --to "$data"
  elif [ ! -f "$data/meta.csv" ] && [ ! -f "$data/evaluation_setup/fold1_test.csv" ]; then
    if [ -n "$given_data" ]; then
      echo "run_dcase.sh: --data $given_data: no meta.csv or evaluation_setup/ there; give the folder" \
           "that holds audio/, meta.csv and evaluation_setup/ (or --download DIR to fetch it)" >&2
      exit 2
    fi
    log "stage 0: build the synthetic TAU-format set ($preset) in $data"
    asc data synth --out "$data" --preset "$preset" --seed "$synth_seed" --workers "$nj"
  else
    log "stage 0: using the dataset in $data"
  fi
  asc data check "$data" --audio none
fi

if in_stage 1; then
  log "stage 1: extract features ($features) into $cache"
  asc extract --data "$data" --features "$features" --out "$cache" --workers "$nj" --device "$extract_device" \
    --splits train,evaluate
fi

run_dirs=()
run_specs=()   # "model norm seed" of each run, in the order of run_dirs
for model in $models; do
  for norm in $norms; do
    for seed in $seeds; do
      run_dirs+=("$exp/${model}_${profile}_${norm}_seed${seed}")
      run_specs+=("$model $norm $seed")
    done
  done
done

if in_stage 2; then
  log "stage 2: train ${#run_dirs[@]} run(s): models [$models] x norms [$norms] x seeds [$seeds], profile $profile"
  for i in "${!run_dirs[@]}"; do
    read -r model norm seed <<<"${run_specs[$i]}"
    train_run "${run_dirs[$i]}" --recipe "recipes/dcase2020/$model.yaml" --profile "$profile" --norm "$norm" \
      --seed "$seed" --set "data.cache=$cache" "${overrides[@]}"
  done
fi

if in_stage 3; then
  log "stage 3: evaluate ${#run_dirs[@]} run(s)"
  evaluate_runs "${run_dirs[@]}"
fi

if in_stage 4; then
  log "stage 4: compare BN and L2BN"
  asc compare "${run_dirs[@]}" --out "$exp/compare"
  log "comparison report: $exp/compare/compare.md"
fi
