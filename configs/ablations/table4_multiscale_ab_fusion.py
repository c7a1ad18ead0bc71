r"""Table 4, row 2: multi-scale ab fusion: the warped raw reference ab (not SPHist) is fused
after each of the four encoder blocks.

Paper (WACV 2023) Table 4 (DIV2K): PSNR 23.233, SSIM 0.910, LPIPS 0.127.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table4_multiscale_ab_fusion.py \
      --workdir=runs/table4_multiscale_ab_fusion
  python -m pikfix_jax.evaluate --config=configs/ablations/table4_multiscale_ab_fusion.py \
      --workdir=runs/table4_multiscale_ab_fusion
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.histogram.fusion = 'ab'
  c.model.histogram.scales = 'multi'
  return c
