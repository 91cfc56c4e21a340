#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with a CUDA GPU (docs/training.md, "On a GPU";
# the numbers are in docs/benchmarks.md, "On a GPU"):
#
#     bash benchmarks/gpu_check.sh MNIST_DIR [OUT_DIR]
#
# MNIST_DIR holds MNIST's four .gz files (the machine may have no internet: `mnistlab data fetch
# --mirror` copies and checks them). Works from a source checkout without installing: the
# package is taken from src/, its dependencies from the Python found (PYTHON, default python3).
#   1. the CUDA tests (augmentation on the GPU equals the CPU's; the optimizer is fused);
#   2. the time-to-accuracy benchmark with --device cuda: the default recipe over 5 seeds, the
#      speed-99.5 recipe over 5 seeds, the plain PyTorch reference loop (fp32 and bf16) and the
#      pytorch/examples-style loop as peers, and the GPU's matrix-product rates;
#   3. `mnistlab train --device cuda`, then the same under `torchrun --nproc-per-node 1`, and
#      `--nproc-per-node` larger than the GPU count, which must stop with a clear message.
set -u
mirror=${1:?usage: bash benchmarks/gpu_check.sh MNIST_DIR [OUT_DIR]}
out=${2:-${OUT:-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MNISTLAB_HOME=${MNISTLAB_HOME:-$(mktemp -d)}
status=0
step() { echo; echo "=== $*"; }
check() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
grep -m1 "model name" /proc/cpuinfo
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(), 'devices', torch.cuda.device_count())"

step "data"
check "$py" -m mnistlab data fetch mnist --mirror "$mirror"

step "CUDA tests"
check "$py" -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_runtime.py \
    -k "cuda or gpu"

step "benchmark on cuda"
check "$py" benchmarks/time_to_accuracy_benchmark.py --device cuda --seeds 5 --fast-seeds 5 \
    --peers reference reference-bf16 torch-loop --max-epochs 3 --batch-sizes 256 1024 \
    --thread-counts --json "$out/cuda.json"

step "command line on cuda"
check "$py" -m mnistlab train --device cuda --out "$out/run" --quiet
check "$py" -m mnistlab train --recipe speed-99.5 --device cuda --out "$out/run-995" --quiet
check "$py" -m torch.distributed.run --nproc-per-node 1 -m mnistlab train --device cuda \
    --out "$out/run-torchrun" --quiet
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
step "torchrun with more processes than GPUs ($((gpus + 1)) on $gpus): must fail clearly"
"$py" -m torch.distributed.run --nproc-per-node $((gpus + 1)) -m mnistlab train --device cuda \
    --out "$out/run-too-many" --quiet >"$out/too-many.log" 2>&1
code=$?
grep -m2 "CUDA device" "$out/too-many.log" || { echo "no clear message"; status=1; }
[ $code -ne 0 ] || { echo "it did not fail"; status=1; }
for r in run run-995 run-torchrun; do
    "$py" -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(sys.argv[2], 'test_accuracy', r.get('test_accuracy'), 'train_seconds', r.get('train_seconds'))" \
        "$out/$r/report.json" "$r" 2>/dev/null || echo "$r: no report.json"
done
echo
[ $status -eq 0 ] && echo "gpu_check: all passed" || echo "gpu_check: FAILURES above"
exit $status
