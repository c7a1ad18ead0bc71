"""Moved: --config=configs/ablations.py:table4_single_scale_histogram (every ablation is a variant of one file)."""

from configs import ablations

get_config = ablations.moved('table4_single_scale_histogram')
