# Stage helpers shared by run_dcase.sh and run_cifar.sh (sourced, not run).
# Expects: script (name for log lines), stage, stop_stage, py, device, gpus.

asc() { "$py" -m asc "$@"; }
log() { printf '%s [%s] %s\n' "$(date '+%H:%M:%S')" "$script" "$*"; }
in_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# train_run DIR ARGS...: `asc train --out DIR ARGS...` unless DIR is complete; a partial run is resumed;
# with gpus > 1 the processes are started by torchrun
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
