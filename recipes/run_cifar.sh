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

script=run_cifar
task=cifar100
stage=0
stop_stage=3
last_stage=3
profile=quick
models="resnet56"
norms="bn l2bn"
seeds="121"
device=auto
gpus=1
jobs=auto
data=""
preset=small
exp=""
tag=""
synth=""
overrides=()

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; cat <<EOF
Options (default):
  --stage N / --stop-stage N   first / last stage to run ($stage / $stop_stage)
  --profile quick|paper        recipe profile ($profile)
  --models "..."               recipes/cifar100/<model>.yaml to train ("$models")
  --norms "..."                norm kinds ("$norms"; Table 5: bn ln in gn4 gn8 sn bcn bin l2bn)
  --seeds "..."                seeds ("$seeds"; the paper uses 121-125)
  --device auto|cpu|cuda       training device ($device)
  --jobs N                     runs trained/evaluated at once, each on cores/N threads
                               (auto: 2 on a CPU with 2+ cores, else 1)
  --gpus N                     processes per node via torchrun ($gpus)
  --data DIR                   the cifar-100-python folder (or its parent)
  --preset tiny|small          size of the synthetic set when no data is given ($preset)
  --synth DIR                  where to build it (data/cifar100_synth_<preset>)
  --set KEY=VALUE              recipe override for every run (repeatable)
  --tag NAME                   suffix of the run names, to keep ablations apart
  --exp DIR                    experiment folder (exp/cifar100_<profile>)
EOF
}

extra_option() {
  case "$1" in
    --tag) tag=_$2 ;;
    *) return 1 ;;
  esac
}

# shellcheck source=recipes/stages.sh
source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"
parse_options "$@"
exp=${exp:-exp/cifar100_${profile}}
setup

given_data=$data
data=${data:-${synth:-data/cifar100_synth_${preset}}}
plan_runs

if in_stage 0; then
  stage_begin 0 data
  if [ -f "$data/cifar-100-python/meta" ] || [ -f "$data/meta" ]; then
    log "stage 0: using CIFAR-100 in $data"
  else
    [ -z "$given_data" ] || die "--data $given_data: no CIFAR-100 there; give the cifar-100-python folder" \
      "(with train, test, meta) or its parent"
    log "stage 0: build a synthetic CIFAR-100 ($preset) in $data"
    asc data synth-cifar --out "$data" --preset "$preset"
  fi
  stage_end
fi

if in_stage 1; then
  stage_begin 1 train
  log "stage 1: train ${#run_dirs[@]} run(s): models [$models] x norms [$norms] x seeds [$seeds]"
  train_all --set "data.root=$(cd "$data" && pwd)"
  stage_end
fi

if in_stage 2; then
  stage_begin 2 evaluate
  log "stage 2: evaluate ${#run_dirs[@]} run(s)"
  evaluate_runs "${run_dirs[@]}"
  stage_end
fi

if in_stage 3; then
  stage_begin 3 compare
  log "stage 3: compare"
  asc compare "${run_dirs[@]}" --out "$exp/compare${tag}"
  log "comparison report: $exp/compare${tag}/compare.md"
  stage_end
fi
stage_times
