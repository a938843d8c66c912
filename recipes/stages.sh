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
      --jobs) jobs=$2 ;;
      *) extra_option "$1" "$2" || die "unknown option $1 (see --help)" ;;
    esac
    shift 2
  done
  local n
  if [ "${jobs:-auto}" = auto ]; then  # CPU: one run per pair of cores keeps both busy, also in the serial parts
    jobs=1
    local gpu=0
    if [ "$device" = auto ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
      gpu=1
    fi
    if [ "$device" != cuda ] && [ "$gpu" -eq 0 ] && [ "$gpus" -eq 1 ] && [ "$(nproc)" -ge 2 ]; then jobs=2; fi
  fi
  for n in "$stage" "$stop_stage" "$gpus" "$jobs" $seeds; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n' (see --help)"
  done
  # a range that runs nothing is a mistake, not a success: the script's own last stage is the default
  [ "$stop_stage" -le "$last_stage" ] || die "--stop-stage $stop_stage: the stages are 0 to $last_stage"
  [ "$stage" -le "$stop_stage" ] || die "--stage $stage comes after --stop-stage $stop_stage: nothing to run"
  [ "$gpus" -ge 1 ] || die "--gpus must be at least 1"
  [ "$jobs" -ge 1 ] || die "--jobs must be at least 1"
  if [ "$jobs" -gt 1 ] && { [ "${BASH_VERSINFO[0]}" -lt 5 ] ||
                            { [ "${BASH_VERSINFO[0]}" -eq 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; }; then
    echo "$script.sh: bash $BASH_VERSION cannot wait for one of several jobs (5.1 can); running one at a time" >&2
    jobs=1
  fi
  threads=$(( $(nproc) / jobs ))
  [ "$threads" -ge 1 ] || threads=1
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
from asc.norm_kinds import NORM_KINDS
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

# plan_runs: run_dirs, run_specs ("model norm seed") and run_sets (each run's extra recipe overrides,
# quoted for eval; empty for a plain norm) for models x norms x seeds, or models x variants x seeds when
# the script has `variants` (NORM[+TRANSFORM...]; checked, and their overrides made, by variant_sets)
plan_runs() {
  run_dirs=()
  run_specs=()
  run_sets=()
  local model variant seed planned m v sets
  declare -A sets_of=()
  if [ -n "${variants:-}" ]; then
    planned=$(variant_sets) || exit 2
    while IFS=$'\t' read -r m v sets; do sets_of["$m $v"]=$sets; done <<<"$planned"
  fi
  for model in $models; do
    for variant in ${variants:-$norms}; do
      for seed in $seeds; do
        run_dirs+=("$exp/${model}_${profile}_${variant}${tag:-}_seed${seed}")
        run_specs+=("$model ${variant%%+*} $seed")
        run_sets+=("${sets_of["$model $variant"]:-}")
      done
    done
  done
}

# variant_sets: per model and variant one line "MODEL<TAB>VARIANT<TAB>OVERRIDES": the --set pairs (quoted
# for eval) that turn the model's recipe into the variant. A variant is NORM[+TRANSFORM...]: each
# +TRANSFORM appends that registered transform, with its defaults, to the list the recipe's augmentation
# keys give (after the profile and the --set overrides), written out as augment.transforms with those
# keys back at their defaults, as a listed recipe must have them. An unknown norm or transform, a
# repeated variant, or a list the task cannot take is one line naming it (exit 2), before any stage.
variant_sets() {
  "$py" - "$script" "$task" "$profile" "$models" "$variants" "${overrides[@]}" <<'PY'
import json
import shlex
import sys

from asc.errors import AscError
from asc.eval.compare import variant_of_recipe
from asc.norm_kinds import NORM_KINDS
from asc.tasks import task_of
from asc.train.augment import FLAT_KEYS, TRANSFORMS, transforms_for
from asc.train.recipe import SCHEMA, load_recipe

script, task, profile, models, variants, *args = sys.argv[1:]
overrides = [a for a in args if a != "--set"]  # the script's "--set KEY=VALUE" pairs


def fail(message: str) -> None:
    sys.exit(f"{script}.sh: --variants {message}")


names = variants.split()
for variant in names:
    norm, *extra = variant.split("+")
    if names.count(variant) > 1:
        fail(f"{variant}: given twice; name each variant once")
    if norm not in NORM_KINDS:
        fail(f"{variant}: unknown norm {norm!r} (a variant is NORM[+TRANSFORM...], e.g. bn+freq_mixstyle; "
             f"norms: {', '.join(NORM_KINDS)})")
    for name in extra:
        if name not in TRANSFORMS:
            fail(f"{variant}: unknown transform {name!r} (transforms: {', '.join(TRANSFORMS)})")
        required = [k for k, f in TRANSFORMS[name].params.items() if f.required]
        if required:
            fail(f"{variant}: {name} has no default {', '.join(required)}, so a variant cannot add it; "
                 "set it in the recipe with --set augment.transforms=[...]")
defaults = {key: SCHEMA["augment"][key].default for key in FLAT_KEYS}
for model in models.split():
    try:
        recipe = load_recipe(f"recipes/{task}/{model}.yaml", profile=profile, overrides=overrides)
        kind = task_of(recipe).kind
        base = transforms_for(recipe["augment"], kind)
    except AscError as exc:
        sys.exit(f"{script}.sh: {exc}")
    for variant in names:
        norm, *extra = variant.split("+")
        for name in extra:
            if kind not in TRANSFORMS[name].kinds:
                fail(f"{variant}: {name} applies to {' and '.join(TRANSFORMS[name].kinds)} inputs; "
                     f"{task}'s are {kind}")
        if not extra:  # a plain norm trains exactly as --norms would (and reuses such runs)
            print(f"{model}\t{variant}\t")
            continue
        augment = {**recipe["augment"], **defaults, "transforms": [*base, *({"name": n} for n in extra)]}
        try:
            listed = transforms_for(augment, kind, source=f"{variant} ({model})")
        except AscError as exc:
            fail(str(exc))
        # the comparison reads the variant back from the run's recipe: it must read back as given
        back = variant_of_recipe({"norm": norm, "augment": {"transforms": listed}})
        if back != variant:
            fail(f"{variant} ({model}): its list {[t['name'] for t in listed]} reads back as {back}, since the "
                 "recipe's augmentation keys could write it; set those keys with --set instead")
        sets = [f"augment.transforms={json.dumps(listed)}",
                *(f"augment.{k}={json.dumps(v)}" for k, v in defaults.items() if recipe["augment"].get(k) != v)]
        print(model, variant, " ".join(shlex.quote(w) for s in sets for w in ("--set", s)), sep="\t")
PY
}

# run_jobs NAME: run the commands queued in job_dirs/job_cmds, up to $jobs at a time. With one job the
# output streams to the terminal; with several each goes to LOGDIR/<run>.<NAME>.log and a line is
# printed when it ends (its last lines too, if it failed; then the stage fails once all have ended).
job_dirs=()
job_cmds=()
run_jobs() {
  local name=$1 i failed=0
  if [ "$jobs" -le 1 ]; then
    for i in "${!job_dirs[@]}"; do
      log "  ${job_dirs[$i]}"
      eval "${job_cmds[$i]}" || failed=1
      [ "$failed" -eq 0 ] || break
    done
  else
    local logdir="$exp/logs" pid running=0
    mkdir -p "$logdir"
    declare -A started=() dir_of=() log_of=()
    # background jobs ignore Ctrl-C: stop them with the script, or they would train on unseen
    trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM
    for i in "${!job_dirs[@]}"; do
      while [ "$running" -ge "$jobs" ]; do
        _reap || failed=1
      done
      [ "$failed" -eq 0 ] || break  # a failed run: start no more, let the running ones finish
      local logfile="$logdir/$(basename "${job_dirs[$i]}").$name.log"
      ( export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads; eval "${job_cmds[$i]}" ) >"$logfile" 2>&1 &
      pid=$!
      started[$pid]=$SECONDS
      dir_of[$pid]=${job_dirs[$i]}
      log_of[$pid]=$logfile
      running=$((running + 1))
      log "  ${job_dirs[$i]}: started (log: $logfile)"
    done
    while [ "$running" -gt 0 ]; do
      _reap || failed=1
    done
    trap - INT TERM
  fi
  job_dirs=()
  job_cmds=()
  [ "$failed" -eq 0 ] || die "stage failed (see the messages above)"
}

# _reap: wait for one job of run_jobs and report it (uses run_jobs' locals)
_reap() {
  local done_pid rc=0
  wait -n -p done_pid || rc=$?
  running=$((running - 1))
  local took=$((SECONDS - started[$done_pid]))
  if [ "$rc" -eq 0 ]; then
    log "  ${dir_of[$done_pid]}: done in ${took} s; $(grep -v '^\s*$' "${log_of[$done_pid]}" | tail -n 1)"
  else
    log "  ${dir_of[$done_pid]}: FAILED after ${took} s (exit $rc); last lines of ${log_of[$done_pid]}:"
    tail -n 5 "${log_of[$done_pid]}" | sed 's/^/      /'
    return 1
  fi
}

# train_all ARGS...: every planned run, with ARGS (e.g. --set data.cache=...) and the --set overrides;
# a complete run is skipped, a partial one resumed (a folder without a checkpoint is taken over);
# with gpus > 1 the processes of each run are started by torchrun
train_all() {
  local i model norm seed dir cmd done_runs=() extend=""
  for i in "${!run_dirs[@]}"; do  # a finished run is skipped only if it was trained as asked now
    read -r model norm seed <<<"${run_specs[$i]}"
    [ -f "${run_dirs[$i]}/COMPLETED" ] &&
      done_runs+=("${run_dirs[$i]}"$'\t'"$model"$'\t'"$norm"$'\t'"$seed"$'\t'"${run_sets[$i]:-}")
  done
  if [ ${#done_runs[@]} -gt 0 ]; then
    extend=$("$py" - "$task" "$profile" "$(printf '%s\n' "${done_runs[@]}")" "$@" "${overrides[@]}" <<'PY'

import shlex
import sys
from asc.errors import AscError
from asc.train.recipe import resume_recipe

task, profile, runs, *args = sys.argv[1:]
overrides = [a for a in args if a != "--set"]
for line in runs.splitlines():
    run_dir, model, norm, seed, sets = line.split("\t")
    extra = [a for a in shlex.split(sets) if a != "--set"]  # a variant's own overrides, applied last
    try:  # the data (its cache), the features and every option must be the run's own
        recipe = resume_recipe(run_dir, f"recipes/{task}/{model}.yaml", profile=profile,
                               overrides=[*overrides, *extra], norm=norm, seed=int(seed))
    except AscError as exc:
        sys.exit(f"{exc} (the run in {run_dir} is finished: give another --exp to train anew)")
    import json
    from pathlib import Path

    done = json.loads((Path(run_dir) / "COMPLETED").read_text()).get("epochs")
    if recipe["train"]["epochs"] != done:
        print(run_dir)  # more epochs asked: resumed, not skipped
PY
    ) || exit 2
  fi
  for i in "${!run_dirs[@]}"; do
    read -r model norm seed <<<"${run_specs[$i]}"
    dir=${run_dirs[$i]}
    if [ -f "$dir/COMPLETED" ] && ! grep -qxF "$dir" <<<"$extend"; then
      log "  $dir: complete, skipped"
      continue
    fi
    local extra=()
    eval "extra=(${run_sets[$i]:-})"  # a variant's overrides (quoted by variant_sets), after the user's
    local args=(train --out "$dir" --device "$device" --recipe "recipes/$task/$model.yaml" --profile "$profile"
                --norm "$norm" --seed "$seed" "$@" "${overrides[@]}" "${extra[@]}")
    [ -d "$dir" ] && args+=(--resume)
    if [ "$gpus" -gt 1 ]; then
      cmd=$(printf '%q ' "$py" -m torch.distributed.run --standalone --nproc_per_node "$gpus" -m asc "${args[@]}")
    else
      cmd=$(printf '%q ' "$py" -m asc "${args[@]}")
    fi
    job_dirs+=("$dir")
    job_cmds+=("$cmd")
  done
  run_jobs train
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
    job_dirs+=("$dir")
    job_cmds+=("$(printf '%q ' "$py" -m asc evaluate "$dir" "${opts[@]}")")
  done
  run_jobs evaluate
}

# estimate_stages ARGS...: one line with the minutes stage 2 (training) and stage 3 (evaluation) should
# take for the runs not done yet, from two timed steps of each model on this machine now
# (asc.train.estimate, in one process); ARGS are recipe overrides (--set KEY=VALUE)
estimate_stages() {
  local i model norm seed dir todo=()
  declare -A train_n=() eval_n=()
  for i in "${!run_dirs[@]}"; do
    read -r model norm seed <<<"${run_specs[$i]}"
    dir=${run_dirs[$i]}
    [ -f "$dir/COMPLETED" ] || train_n[$model]=$(( ${train_n[$model]:-0} + 1 ))
    if ! [ -f "$dir/report/report.json" ] || ! [ "$dir/report/report.json" -nt "$dir/checkpoints/best.pt" ]; then
      eval_n[$model]=$(( ${eval_n[$model]:-0} + 1 ))
    fi
  done
  for model in $models; do
    todo+=("$model:${train_n[$model]:-0}:${eval_n[$model]:-0}")
  done
  "$py" - "$task" "$profile" "$jobs" "${todo[*]}" "$@" "${overrides[@]}" <<'PY' || true
import sys
from asc.train.estimate import estimate
from asc.train.recipe import load_recipe

task, profile, jobs, todo, *args = sys.argv[1:]
overrides = [a for a in args if a != "--set"]  # the script's "--set KEY=VALUE" pairs
train = evaluate = 0.0
for item in todo.split():
    model, n_train, n_eval = item.split(":")
    if int(n_train) + int(n_eval) == 0:
        continue
    try:
        e = estimate(load_recipe(f"recipes/{task}/{model}.yaml", profile=profile, overrides=overrides))
    except Exception as exc:  # an estimate must never stop the stage it describes
        print(f"(no time estimate: {exc})")
        sys.exit(0)
    train += e["train_s"] * int(n_train)
    evaluate += e["evaluate_s"] * int(n_eval)
runs = [int(n) for item in todo.split() for n in item.split(":")[1:]]
if not any(runs):
    print("expected: nothing left to train or evaluate")
    sys.exit(0)
at_once = min(int(jobs), max(runs))
share = 1.0 if at_once == 1 else 0.85  # measured: two one-thread runs at once take 85 % of one after another
print(f"expected: training about {train * share / 60:.1f} min, evaluation about {evaluate * share / 60:.1f} min "
      f"(two timed steps per model on this machine now{f', {at_once} runs at a time' if at_once > 1 else ''})")
PY
}
