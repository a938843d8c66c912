#!/usr/bin/env bash
# BN vs L2BN on CIFAR-100 (the paper's Tables 1, 3, 4 and 5), with the stage conventions of run_dcase.sh.
#
#   bash recipes/run_cifar.sh                                     # quick profile, synthetic CIFAR-100, CPU
#   bash recipes/run_cifar.sh --profile paper --data /data/cifar-100-python --seeds "121 122 123 124 125"
#   bash recipes/run_cifar.sh --profile paper --data DIR --models "resnet56" \
#        --norms "bn lnbn inbn pnbn l2bn"                         # Table 3
#   bash recipes/run_cifar.sh --profile paper --data DIR --tag stage1 \
#        --set model_params.l2bn_parts=stage1                     # Table 4 (L2BN in stage 1 only)
#
# Stages (each re-runnable; finished work is skipped):
#   0 data      synthetic CIFAR-100 (default) or a local copy (--data)
#   1 train     models x norms x seeds (asc train; torchrun when --gpus > 1)
#   2 evaluate  accuracy, per-class scores, angles and IIR for every run (asc evaluate)
#   3 compare   BN vs L2BN table over seeds (asc compare)
set -euo pipefail

stage=0
stop_stage=3
profile=quick
models="resnet56"
norms="bn l2bn"
seeds="121"
device=auto
gpus=1
data=""
preset=small
exp=""
tag=""
synth=""
overrides=()

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; cat <<EOF
Options (default):
  --stage N / --stop-stage N   first / last stage to run ($stage / $stop_stage)
  --profile quick|paper        recipe profile ($profile)
  --models "..."               recipes/cifar100/<model>.yaml to train ("$models")
  --norms "..."                norm kinds ("$norms")
  --seeds "..."                seeds ("$seeds"; the paper uses 121-125)
  --device auto|cpu|cuda       training device ($device)
  --gpus N                     processes per node via torchrun ($gpus)
  --data DIR                   the cifar-100-python folder (or its parent)
  --preset tiny|small          size of the synthetic set when no data is given ($preset)
  --synth DIR                  where to build it (data/cifar100_synth_<preset>)
  --set KEY=VALUE              recipe override for every run (repeatable)
  --tag NAME                   suffix of the run names, to keep ablations apart
  --exp DIR                    experiment folder (exp/cifar100_<profile>)
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
    --preset) preset=$2; shift 2 ;;
    --synth) synth=$2; shift 2 ;;
    --set) overrides+=(--set "$2"); shift 2 ;;
    --tag) tag=_$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_cifar.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
exp=${exp:-exp/cifar100_${profile}}

py=$(bash scripts/setup.sh)
script=run_cifar
# shellcheck source=recipes/stages.sh
source recipes/stages.sh

given_data=$data
data=${data:-${synth:-data/cifar100_synth_${preset}}}

if in_stage 0; then
  if [ -f "$data/cifar-100-python/meta" ] || [ -f "$data/meta" ]; then
    log "stage 0: using CIFAR-100 in $data"
  elif [ -n "$given_data" ]; then
    echo "run_cifar.sh: --data $given_data: no CIFAR-100 there; give the cifar-100-python folder" \
         "(with train, test, meta) or its parent" >&2
    exit 2
  else
    log "stage 0: build a synthetic CIFAR-100 ($preset) in $data"
    asc data synth-cifar --out "$data" --preset "$preset"
  fi
fi

run_dirs=()
run_specs=()   # "model norm seed" of each run, in the order of run_dirs
for model in $models; do
  for norm in $norms; do
    for seed in $seeds; do
      run_dirs+=("$exp/${model}_${profile}_${norm}${tag}_seed${seed}")
      run_specs+=("$model $norm $seed")
    done
  done
done

if in_stage 1; then
  log "stage 1: train ${#run_dirs[@]} run(s): models [$models] x norms [$norms] x seeds [$seeds]"
  for i in "${!run_dirs[@]}"; do
    read -r model norm seed <<<"${run_specs[$i]}"
    train_run "${run_dirs[$i]}" --recipe "recipes/cifar100/$model.yaml" --profile "$profile" --norm "$norm" \
      --seed "$seed" --set "data.root=$data" "${overrides[@]}"
  done
fi

if in_stage 2; then
  log "stage 2: evaluate ${#run_dirs[@]} run(s)"
  evaluate_runs "${run_dirs[@]}"
fi

if in_stage 3; then
  log "stage 3: compare"
  asc compare "${run_dirs[@]}" --out "$exp/compare${tag}"
  log "comparison report: $exp/compare${tag}/compare.md"
fi
