r"""Table 4, row 1: input ab fusion (He et al.): the reference's warped raw ab is concatenated
with L at the colorization sub-net's input; no SPHist, no fusion after the encoder blocks.

Paper (WACV 2023) Table 4 (DIV2K): PSNR 22.978, SSIM 0.902, LPIPS 0.130.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table4_input_ab_fusion.py \
      --workdir=runs/table4_input_ab_fusion
  python -m pikfix_jax.evaluate --config=configs/ablations/table4_input_ab_fusion.py \
      --workdir=runs/table4_input_ab_fusion
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.histogram.fusion = 'ab'  # raw reference ab instead of SPHist
  c.model.histogram.scales = 'input'  # fused once, at the input
  return c
