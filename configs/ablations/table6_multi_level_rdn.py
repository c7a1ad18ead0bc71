"""Moved: --config=configs/ablations.py:table6_multi_level_rdn (every ablation is a variant of one file)."""

from configs import ablations

get_config = ablations.moved('table6_multi_level_rdn')
