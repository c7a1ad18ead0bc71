r"""Table 5, row 2: single-scale similarity map (as in [60]): one similarity map at 1/4
resolution; its warped SPHist is average-pooled to the other encoder scales.

Paper (WACV 2023) Table 5 (DIV2K): PSNR 23.803, SSIM 0.922, LPIPS 0.126.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table5_single_similarity.py \
      --workdir=runs/table5_single_similarity
  python -m pikfix_jax.evaluate --config=configs/ablations/table5_single_similarity.py \
      --workdir=runs/table5_single_similarity
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.similarity.mode = 'single'
  return c
