"""Moved: --config=configs/ablations.py:table4_multiscale_histogram (every ablation is a variant of one file)."""

from configs import ablations

get_config = ablations.moved('table4_multiscale_histogram')
