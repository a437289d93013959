#!/usr/bin/env bash
# Install macs and everything it needs into the current Python environment (idempotent).
#   bash scripts/setup.sh            # runtime + test dependencies, macs itself (editable)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PY -m pip install -q -r requirements.txt
$PY -m pip install -q --no-deps -e .

# torchsort (differentiable ranking for the CLAP ranking loss) ships no wheels: build it against
# the installed torch. Its build picks CUDA whenever an `nvcc` is on PATH, and fails if that nvcc
# does not match torch's CUDA, so build it with nvcc hidden unless torch sees a GPU.
if ! $PY -c "import torchsort" 2>/dev/null; then
  $PY -m pip install -q wheel setuptools
  path="$PATH"
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    shim=$(mktemp -d)
    IFS=: read -ra dirs <<<"$PATH"
    for d in "${dirs[@]}"; do
      [ -x "$d/nvcc" ] || continue
      for f in "$d"/*; do [ "$(basename "$f")" = nvcc ] || ln -sf "$f" "$shim/"; done
      path="${path//$d/$shim}"
    done
  fi
  if ! PATH="$path" $PY -m pip install -q --no-build-isolation "torchsort==0.1.10"; then
    echo "setup: torchsort could not be built; the ranking loss falls back to macs' own soft rank" >&2
  fi
fi
$PY -c "import macs_cli, torch; print('macs', macs_cli.__version__, '| torch', torch.__version__)"
