r"""Table 4, row 3: single-scale histogram fusion: the warped SPHist is fused only after the
first (shallowest, 1/4 resolution) encoder block.

Paper (WACV 2023) Table 4 (DIV2K): PSNR 23.631, SSIM 0.906, LPIPS 0.125.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table4_single_scale_histogram.py \
      --workdir=runs/table4_single_scale_histogram
  python -m pikfix_jax.evaluate --config=configs/ablations/table4_single_scale_histogram.py \
      --workdir=runs/table4_single_scale_histogram
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.histogram.fusion = 'histogram'
  c.model.histogram.scales = 'single'
  return c
