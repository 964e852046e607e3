#!/usr/bin/env bash
# The request router of the configs with replicas (a [[server]] with `replicas`, docs/serving.md,
# "Replicas behind vllm-router"): vllm-router 0.1.17 from PyPI, the vLLM project's router, in an
# environment of its own at $SPECREASON_HOME/vllm-router (default ~/.cache/specreason-graph/vllm-router),
# the `python` a router runs with unless its config names another. About 20 MB of wheels.
# servers/setup-cpu.sh runs it, and servers/setup-gpu.sh for a config with a router; alone, it prepares
# a host that runs only routers (a gateway in front of GPU hosts).
# Pinned: servers/constraints-vllm-router.txt holds vllm-router and every dependency. Idempotent: a
# finished environment (same constraints file, by its sha256) is kept.
#   bash servers/setup-router.sh [--dry-run]   --dry-run prints the commands it would run, runs none
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=servers/platform.sh
. "$here/platform.sh"   # home, python, check_platform
me=servers/setup-router.sh
dry_run=0
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=1 ;;
  *) echo "$me: unknown option $1 (--dry-run prints the commands)" >&2
     exit 2 ;;
esac
venv="$home/vllm-router"
constraints="$here/constraints-vllm-router.txt"
stamp="$venv/.specreason-constraints.sha256"
want="$(sha256sum "$constraints" | cut -d' ' -f1)"
[ "$dry_run" = 1 ] || check_platform "$me" "vllm-router 0.1.17"

say() {   # a line about what happens; on a dry run a comment, as servers/setup-gpu.sh prints them
  if [ "$dry_run" = 1 ]; then echo "# $*"; else echo "$*"; fi
}

run() {   # print the command (quoted to paste into a shell) on a dry run, else run it
  local arg line=""
  if [ "$dry_run" = 0 ]; then "$@"; return; fi
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then line+=" $arg"
    else line+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  echo "${line# }"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "request router: installing vllm-router 0.1.17 into $venv"
  run rm -rf "$venv"
  run "$python" -m venv "$venv"
  run "$venv/bin/python" -m pip install --quiet -c "$constraints" vllm-router==0.1.17
  # the Rust router itself (vllm_router_rs), not only the Python launcher around it
  run "$venv/bin/python" -c "import vllm_router.launch_router, vllm_router.router"
  [ "$dry_run" = 1 ] || echo "$want" > "$stamp"
else
  say "request router: ready at $venv"
fi
