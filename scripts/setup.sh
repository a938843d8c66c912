#!/usr/bin/env bash
# Make a Python that imports a working `asc` from this checkout; print its path on stdout.
# Idempotent: if the current Python (or .venv) already has it, nothing is installed.
# Override the torch pins with TORCH_SPEC / TORCHAUDIO_SPEC on machines without the local wheels.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

probe='import os, sys, asc, torch, torchaudio, librosa, soundfile, yaml, tqdm, matplotlib, tensorboard, xdist, importlinter, onnxruntime, onnx, onnxscript
sys.exit(0 if os.path.realpath(os.path.dirname(asc.__file__)) == os.path.realpath(sys.argv[1]) else 1)'

# A Python that passed the probe is remembered with the hash of pyproject.toml (.setup-ok), so the
# next call costs nothing instead of importing torch and friends (about 3 s); a changed pyproject.toml,
# or another Python, probes again.
stamp=$root/.setup-ok
key() { printf '%s %s\n' "$1" "$(sha256sum "$root/pyproject.toml" | cut -c1-16)"; }
works() {
  if [ -f "$stamp" ] && grep -qxF "$(key "$1")" "$stamp"; then return 0; fi
  "$1" -c "$probe" "$root/asc" >/dev/null 2>&1 || return 1
  key "$1" >>"$stamp"
}

for py in "${PYTHON:-python3}" "$root/.venv/bin/python"; do
  if [ -x "$(command -v "$py" 2>/dev/null || true)" ] && works "$(command -v "$py")"; then
    command -v "$py"
    exit 0
  fi
done

echo "[setup] creating $root/.venv and installing asc-l2bn (first run only)" >&2
base=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$base" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
log=.venv/setup.log
echo "[setup] torch, torchaudio and the package's dependencies (log: $log)" >&2
if ! { "${pip[@]}" install "${TORCH_SPEC:-torch==2.14.1}" "${TORCHAUDIO_SPEC:-torchaudio==2.11.0}" &&
       "${pip[@]}" install -e ".[dev,onnx]"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "[setup] installation failed; the full pip output is in $log" >&2
  exit 1
fi
works .venv/bin/python || { echo "[setup] .venv was built but cannot import asc; see the pip output above" >&2; exit 1; }
echo "[setup] done" >&2
echo "$root/.venv/bin/python"
