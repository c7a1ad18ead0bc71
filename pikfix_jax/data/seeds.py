"""Deterministic seeds for stateless random ops, derived from any mix of ints and strings."""

import zlib

import numpy as np


def seed_int(*parts) -> int:
  """A 31-bit integer determined by `parts` (ints or strings), e.g. (config.seed, epoch, 'train')."""
  words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) & 0xFFFFFFFF for p in parts]
  return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)
