#!/usr/bin/env bash
# The GPU half of issue 5's measurements, as one short prepared script (about 5-10 minutes on
# one H100/H200; written without a GPU at hand, so run it once and read the logs):
#   1. `decodiff model info --size L`: parameters and GFLOPs per sample;
#   2. training samples/s of UNet L in bf16 on 256x256 images (latent 4x32x32), global batch 64,
#      with and without the latent cache, through the real training loop (Accelerate, fused AdamW,
#      TF32), the VAE being the Stable-Diffusion KL-f8 architecture (random weights: speed only);
#      one process, and one per GPU when there are several; then evaluation images/s
#      (5 reverse steps, 2 decodes, maps);
#   3. the metrics on the GPU (torch backend) on an MVTec-AD-sized synthetic test set.
# Results: OUT/*.json and OUT/*.txt.
#
#   bash benchmarks/gpu_check.sh [OUT]        # from the repository root, in the project's venv
set -euo pipefail
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY - <<'PYEOF' | tee -a "$OUT/gpu.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script needs a GPU"
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count(),
      torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PYEOF
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
LAYOUTS="1x0"
if [ "$NGPU" -gt 1 ]; then LAYOUTS="1x0,${NGPU}x0"; fi

echo "== model info" | tee "$OUT/model-L.txt"
$PY -m decodiff.harness.cli model info --size L | tee -a "$OUT/model-L.txt"

echo "== training and evaluation throughput, UNet L, bf16"
$PY benchmarks/train_speed.py --device cuda --size L --precision bf16 --vae sd --batch 64 --steps 30 \
    --layouts "$LAYOUTS" --train-images 160 --categories brick,coffee --eval-batch 32 \
    --test-images 16 --shard-samples 8 \
    --work "$OUT/work" --json "$OUT/train_speed_L_bf16.json" 2>"$OUT/train_speed_L_bf16.log" \
    | tee "$OUT/train_speed_L_bf16.txt"

echo "== UNet L training step and 5-step inference: fp32 (TF32), bf16, torch.compile; beside the authors'"
echo "   UNet_L when REFERENCE=path/to/their/code is set (issue 16)"
$PY benchmarks/unet_vs_reference.py --device cuda --size L --batch 64 --rounds 5 --bf16 --compile \
    ${REFERENCE:+--reference "$REFERENCE"} --json "$OUT/unet_vs_reference_L.json" \
    2>"$OUT/unet_vs_reference_L.log" | tee "$OUT/unet_vs_reference_L.txt"

echo "== metrics on the GPU"
$PY benchmarks/metrics_speed.py --only fast --device cuda --backend torch --repeat 2 \
    --json "$OUT/metrics_gpu.json" 2>"$OUT/metrics_gpu.log" | tee "$OUT/metrics_gpu.txt"

rm -rf "$OUT/work"
echo "results in $OUT"
