r"""Table 6, row 2: multi-level RDN (1x, 1/4, 1/8), the full Pik-Fix model on Pascal VOC with
synthetic degradation (same as configs/pascal_voc.py).

Paper (WACV 2023) Table 6 (Pascal VOC w/ degradation): PSNR 22.22, SSIM 0.828, LPIPS 0.186.
Train and evaluate (docs/REPRODUCE.md):
  python -m pikfix_jax.main --config=configs/ablations/table6_multi_level_rdn.py \
      --workdir=runs/table6_multi_level_rdn
  python -m pikfix_jax.evaluate --config=configs/ablations/table6_multi_level_rdn.py \
      --workdir=runs/table6_multi_level_rdn
"""

from configs import pascal_voc


def get_config():
  c = pascal_voc.get_config()
  c.model.restoration.levels = (1, 4, 8)
  return c
