#!/usr/bin/env bash
# Check and time the GPU path in one command (see scripts/gpu_check.py --help):
#
#   bash scripts/gpu_check.sh [--out DIR]            # on a CUDA machine: DIR/gpu-check.json and gpu-check.md
#   bash scripts/gpu_check.sh --rehearse --out DIR   # every step on the CPU at tiny sizes
#
# Python: the repo's .venv if there is one, else python3. When `import soundfile` fails there and
# wheels were carried in .whl/ (BENCHMARKS.md, "GPU check"), they are installed into /tmp/site
# (or $GPU_CHECK_SITE) and put on PYTHONPATH; if that fails too, the extraction check is skipped and
# says so. Prints nothing of its own: on a machine without CUDA the only line is the script's
# "no CUDA device: nothing to check".
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

soundfile="installed"
if ! "$PY" -c 'import soundfile' >/dev/null 2>&1; then
    soundfile="missing (no wheels in .whl/)"
    shopt -s nullglob
    wheels=("$ROOT"/.whl/*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -gt 0 ]; then
        site="${GPU_CHECK_SITE:-/tmp/site}"
        log="$(mktemp -t gpu-check-pip.XXXXXX)"
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$site" "${wheels[@]}" >"$log" 2>&1 \
            && PYTHONPATH="$site:$PYTHONPATH" "$PY" -c 'import soundfile' >>"$log" 2>&1; then
            export PYTHONPATH="$site:$PYTHONPATH"
            soundfile="carried wheels (${#wheels[@]} from .whl/ into $site)"
        else
            soundfile="missing (installing .whl/ failed: $(tail -n 1 "$log" | tr -d '\r'))"
        fi
        rm -f "$log"
    fi
fi
export GPU_CHECK_SOUNDFILE="$soundfile"
export PYTHONUNBUFFERED=1
exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"
