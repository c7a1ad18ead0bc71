"""Small helpers the network tests share: seeded uniform arrays, and checks on variable trees."""

import flax
import jax
import numpy as np


def uniform(seed: int, shape: tuple, low: float = 0.0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32)


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def assert_same_tree(variables, reference):
  """`variables` (from a torch module's to_flax) has exactly the init's names and shapes."""
  shapes = lambda t: jax.tree.map(lambda x: tuple(np.shape(x)), flax.core.unfreeze(t))
  assert shapes(variables) == shapes(reference)


def assert_every_gradient_nonzero(grads, what: str):
  flat = flax.traverse_util.flatten_dict(grads, sep='/')
  zero = [name for name, g in flat.items() if not np.any(np.asarray(g))]
  assert not zero, f'{what}: no gradient reaches {zero}'


