r"""Table 4, row 4: multi-scale histogram fusion, the full Pik-Fix model (same as
configs/div2k.py; kept as its own file so every table row has one).

Paper (WACV 2023) Table 4 (DIV2K): PSNR 23.952, SSIM 0.925, LPIPS 0.120.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table4_multiscale_histogram.py \
      --workdir=runs/table4_multiscale_histogram
  python -m pikfix_jax.evaluate --config=configs/ablations/table4_multiscale_histogram.py \
      --workdir=runs/table4_multiscale_histogram
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.histogram.fusion = 'histogram'
  c.model.histogram.scales = 'multi'
  return c
