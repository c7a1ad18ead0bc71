r"""The ablations of Pik-Fix's Tables 4-6 (WACV 2023), one variant per table row, each a switch
of `config.model` (docs/MODEL.md) on the DIV2K (Tables 4-5) or degraded Pascal VOC (Table 6)
config:

  python -m pikfix_jax.main --config=configs/ablations.py:table4_input_ab_fusion \
      --workdir=runs/table4_input_ab_fusion
  python -m pikfix_jax.evaluate --config=configs/ablations.py:table4_input_ab_fusion \
      --workdir=runs/table4_input_ab_fusion

VARIANTS lists the rows with the paper's numbers (PSNR, SSIM, LPIPS); docs/REPRODUCE.md has
the commands for every row.
"""

import ml_collections

from configs import div2k
from configs import pascal_voc

# name: (the row, its base config, {dotted model field: value}, the paper's PSNR/SSIM/LPIPS).
VARIANTS = {
    'table4_input_ab_fusion': (
        "Table 4, row 1: input ab fusion (He et al.): the reference's warped raw ab "
        "concatenated with L at the colorization sub-net's input; no SPHist, no fusion after "
        'the encoder blocks', div2k,
        {'histogram.fusion': 'ab', 'histogram.scales': 'input'}, (22.978, 0.902, 0.130)),
    'table4_multiscale_ab_fusion': (
        'Table 4, row 2: the warped raw reference ab (not SPHist) fused after each of the four '
        'encoder blocks', div2k,
        {'histogram.fusion': 'ab', 'histogram.scales': 'multi'}, (23.233, 0.910, 0.127)),
    'table4_single_scale_histogram': (
        'Table 4, row 3: the warped SPHist fused only after the first (1/4 resolution) '
        'encoder block', div2k,
        {'histogram.fusion': 'histogram', 'histogram.scales': 'single'}, (23.631, 0.906, 0.125)),
    'table4_multiscale_histogram': (
        'Table 4, row 4: multi-scale histogram fusion, the full model (= configs/div2k.py)',
        div2k, {'histogram.fusion': 'histogram', 'histogram.scales': 'multi'},
        (23.952, 0.925, 0.120)),
    'table5_no_similarity': (
        "Table 5, row 1: no similarity map: the reference's SPHist resized to each encoder "
        'scale and fused without warping (no ResNet-34 / similarity sub-net)', div2k,
        {'similarity.mode': 'none'}, (22.817, 0.910, 0.131)),
    'table5_single_similarity': (
        'Table 5, row 2: one similarity map at 1/4 resolution (as in [60]); its warped SPHist '
        'average-pooled to the other encoder scales', div2k,
        {'similarity.mode': 'single'}, (23.803, 0.922, 0.126)),
    'table5_multiscale_similarity': (
        'Table 5, row 3: multi-scale similarity maps (eq. 1 per scale), the full model (= '
        'configs/div2k.py)', div2k, {'similarity.mode': 'multi'}, (23.952, 0.925, 0.120)),
    'table6_single_level_rdn': (
        'Table 6, row 1: single-level RDN (the original RDN of Zhang et al.) as the restoration '
        'sub-net, Pascal VOC with synthetic degradation', pascal_voc,
        {'restoration.levels': (1,)}, (21.89, 0.818, 0.190)),
    'table6_multi_level_rdn': (
        'Table 6, row 2: multi-level RDN (1x, 1/4, 1/8), the full model on Pascal VOC with '
        'synthetic degradation (= configs/pascal_voc.py)', pascal_voc,
        {'restoration.levels': (1, 4, 8)}, (22.22, 0.828, 0.186)),
}


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """The config of the ablation `variant` (`--config=configs/ablations.py:VARIANT`)."""
  if variant not in VARIANTS:
    raise ValueError(f'configs/ablations.py needs a variant, --config=configs/ablations.py:NAME, '
                     f'NAME one of {", ".join(VARIANTS)} (got {variant!r}).')
  _, base, fields, _ = VARIANTS[variant]
  c = base.get_config()
  for dotted, value in fields.items():
    section, field = dotted.split('.')
    c.model[section][field] = value
  return c


def moved(variant: str):
  """`get_config` of the old per-row file configs/ablations/VARIANT.py: a one-line error
  naming the command that replaced it."""
  def get_config():
    raise SystemExit(f'configs/ablations/{variant}.py is gone: use '
                     f'--config=configs/ablations.py:{variant}')
  return get_config
