#!/usr/bin/env bash
# The GPU measurements missing from benchmarks/results/, as one script for a lent GPU machine
# (the device tool's `run`; see the project's development notes). About 5 minutes on one H100.
#
#   run: bash benchmarks/gpu_session.sh          (carry: .whl, holding the wheels the machine lacks:
#                                                  diffusers, importlib_metadata, soundfile, cffi,
#                                                  pycparser, soxr for its Python 3.12)
#
# Writes every result JSON and the log to $OUT (or benchmarks/results/ when OUT is unset).
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
status=0
# 1. generation: full-size SD v1.x, 512 x 512, 20 steps, batch 1 and 8, MACS vs plain diffusers
timeout 420 python3 benchmarks/generation_speed.py --device cuda --out "$out/generation_speed_gpu.json" \
  2>&1 | tee "$out/generation_speed_gpu.log" || status=1
# 2. CLAP embedding throughput on the GPU (laion HTSAT-tiny and transformers' ClapModel)
timeout 120 python3 benchmarks/clap_throughput.py --device cuda --stems 256 --batch-size 32 \
  --out "$out/clap_throughput_gpu.json" 2>&1 | tee "$out/clap_throughput_gpu.log" || status=1
# 3. end-to-end `macs separate` of a 10 min 44.1 kHz stereo file on the GPU, batch 1 and 16 (+ stem-sum check)
for b in 1 16; do
  timeout 240 python3 benchmarks/speed.py --device cuda --durations 600 --repeats 2 --wait-idle 0 \
    --out "$out/speed_gpu_b$b.json" --extra --batch-size $b 2>&1 | tee "$out/speed_gpu_b$b.log" || status=1
done
exit $status
