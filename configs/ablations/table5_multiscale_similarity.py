"""Moved: --config=configs/ablations.py:table5_multiscale_similarity (every ablation is a variant of one file)."""

from configs import ablations

get_config = ablations.moved('table5_multiscale_similarity')
