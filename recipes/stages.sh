# Shared by run_dcase.sh and run_cifar.sh (sourced, not run): option parsing, the runs to train, and
# the train / evaluate / compare loops. A script sets `script`, `task` and its defaults, defines
# `usage` (and `extra_option NAME VALUE` for options of its own), then calls parse_options "$@".

die() { echo "$script.sh: $*" >&2; exit 2; }
log() { printf '%s [%s] %s\n' "$(date '+%H:%M:%S')" "$script" "$*"; }
in_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
declare -F extra_option >/dev/null || extra_option() { return 1; }  # a script may define its own first

# parse_options "$@": the options both scripts take; anything else goes to extra_option
parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
    esac
    [ $# -ge 2 ] || die "$1 needs a value (see --help)"
    case "$1" in
      --stage) stage=$2 ;;
      --stop-stage|--stop_stage) stop_stage=$2 ;;
      --profile) profile=$2 ;;
      --models) models=$2 ;;
      --norms) norms=$2 ;;
      --seeds) seeds=$2 ;;
      --device) device=$2 ;;
      --gpus) gpus=$2 ;;
      --data) data=$2 ;;
      --preset) preset=$2 ;;
      --synth) synth=$2 ;;
      --set) overrides+=(--set "$2") ;;
      --exp) exp=$2 ;;
      *) extra_option "$1" "$2" || die "unknown option $1 (see --help)" ;;
    esac
    shift 2
  done
  local n
  for n in "$stage" "$stop_stage" "$gpus" $seeds; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n' (see --help)"
  done
  [ "$gpus" -ge 1 ] || die "--gpus must be at least 1"
  case "$device" in auto|cpu|cuda) ;; *) die "--device must be auto, cpu or cuda, got '$device'" ;; esac
  [ -n "$models" ] && [ -n "$norms" ] && [ -n "$seeds" ] || die "--models, --norms and --seeds need values"
}

# setup: the Python that runs asc (installing it on first use), then a check of models and norms
# before any stage runs, so a typo fails in a second, not after the data stage
setup() {
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$root"
  py=$(bash scripts/setup.sh)
  local model
  for model in $models; do
    [ -f "recipes/$task/$model.yaml" ] || die "--models: no recipe recipes/$task/$model.yaml (have:" \
      "$(cd "recipes/$task" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"
  done
  "$py" - "$script" $norms <<'PY' || exit 2
import sys
from asc.nn import NORM_KINDS
script, *norms = sys.argv[1:]
bad = [n for n in norms if n not in NORM_KINDS]
if bad:
    sys.exit(f"{script}.sh: --norms: unknown norm {bad[0]!r} (known: {', '.join(NORM_KINDS)})")
PY
}

asc() { "$py" -m asc "$@"; }

# stage timing: stage_begin N NAME ... stage_end; stage_times prints the table at the end
stage_names=()
stage_secs=()
stage_begin() { _stage_t0=$SECONDS; _stage_name="$1 $2"; }
stage_end() { stage_names+=("$_stage_name"); stage_secs+=($((SECONDS - _stage_t0))); }
stage_times() {
  [ ${#stage_names[@]} -gt 0 ] || return 0
  log "time per stage:"
  printf '| stage | seconds |\n|---|---:|\n'
  local i total=0
  for i in "${!stage_names[@]}"; do
    printf '| %s | %d |\n' "${stage_names[$i]}" "${stage_secs[$i]}"
    total=$((total + stage_secs[i]))
  done
  printf '| total | %d |\n' "$total"
}

# plan_runs: run_dirs and run_specs ("model norm seed") for models x norms x seeds
plan_runs() {
  run_dirs=()
  run_specs=()
  local model norm seed
  for model in $models; do
    for norm in $norms; do
      for seed in $seeds; do
        run_dirs+=("$exp/${model}_${profile}_${norm}${tag:-}_seed${seed}")
        run_specs+=("$model $norm $seed")
      done
    done
  done
}

# train_run DIR ARGS...: `asc train --out DIR ARGS...` unless DIR is complete; a partial run is resumed
# (a folder without a checkpoint is taken over); with gpus > 1 the processes are started by torchrun
train_run() {
  local dir=$1
  shift
  if [ -f "$dir/COMPLETED" ]; then
    log "  $dir: complete, skipped"
    return 0
  fi
  local args=(train --out "$dir" --device "$device" "$@")
  [ -d "$dir" ] && args+=(--resume)
  log "  $dir"
  if [ "$gpus" -gt 1 ]; then
    "$py" -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m asc "${args[@]}"
  else
    asc "${args[@]}"
  fi
}

# train_all ARGS...: every planned run, with ARGS (e.g. --set data.cache=...) and the --set overrides
train_all() {
  local i model norm seed
  for i in "${!run_dirs[@]}"; do
    read -r model norm seed <<<"${run_specs[$i]}"
    train_run "${run_dirs[$i]}" --recipe "recipes/$task/$model.yaml" --profile "$profile" --norm "$norm" \
      --seed "$seed" "$@" "${overrides[@]}"
  done
}

# evaluate_runs DIR...: `asc evaluate` each run whose report is missing or older than its best checkpoint
evaluate_runs() {
  local dir opts=()
  [ "$device" = auto ] || opts=(--device "$device")
  for dir in "$@"; do
    if [ -f "$dir/report/report.json" ] && [ "$dir/report/report.json" -nt "$dir/checkpoints/best.pt" ]; then
      log "  $dir: report up to date, skipped"
      continue
    fi
    asc evaluate "$dir" "${opts[@]}"
  done
}
