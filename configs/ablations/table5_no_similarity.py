r"""Table 5, row 1: no similarity map: the reference's SPHist is resized to each encoder scale
and fused without warping (no ResNet-34 / similarity sub-net).

Paper (WACV 2023) Table 5 (DIV2K): PSNR 22.817, SSIM 0.910, LPIPS 0.131.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table5_no_similarity.py \
      --workdir=runs/table5_no_similarity
  python -m pikfix_jax.evaluate --config=configs/ablations/table5_no_similarity.py \
      --workdir=runs/table5_no_similarity
"""

from configs import div2k


def get_config():
  c = div2k.get_config()
  c.model.similarity.mode = 'none'
  return c
