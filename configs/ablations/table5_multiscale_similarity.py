r"""Table 5, row 3: multi-scale similarity maps (eq. 1 per scale), the full Pik-Fix model (same
as configs/div2k.py).

Paper (WACV 2023) Table 5 (DIV2K): PSNR 23.952, SSIM 0.925, LPIPS 0.120.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table5_multiscale_similarity.py \
      --workdir=runs/table5_multiscale_similarity
  python -m pikfix_jax.evaluate --config=configs/ablations/table5_multiscale_similarity.py \
      --workdir=runs/table5_multiscale_similarity
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.similarity.mode = 'multi'
  return c
