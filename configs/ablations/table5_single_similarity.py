"""Moved: --config=configs/ablations.py:table5_single_similarity (every ablation is a variant of one file)."""

from configs import ablations

get_config = ablations.moved('table5_single_similarity')
