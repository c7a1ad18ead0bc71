"""Moved: --config=configs/ablations.py:table4_input_ab_fusion (every ablation is a variant of one file)."""

from configs import ablations

get_config = ablations.moved('table4_input_ab_fusion')
