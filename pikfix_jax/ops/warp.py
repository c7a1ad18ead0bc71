"""Similarity (Pik-Fix eq. 2) and histogram warping softmax(Phi_i) @ h_i, memory-bounded.

The similarity map of eq. (2) between N_q input positions and N_k reference positions is
never materialised whole: queries are processed in chunks, so memory grows as
chunk * N_k instead of N_q * N_k.

Several references (`warp_histogram` given sequences of keys and values) are one set of keys:
their positions are concatenated, centred by the mean over *all* of them (eq. 2's mean, taken
over the union) and compete in one softmax, so every input position takes its colour from the
best-matching position of whichever reference has it (docs/MODEL.md, "Several references").
"""

import functools
from typing import Sequence, Union

import jax
import jax.numpy as jnp


def center_and_normalize(features: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
  """(B, N, C) -> features minus their mean vector over positions, L2-normalised (eq. 2)."""
  features = features.astype(jnp.float32)
  centred = features - jnp.mean(features, axis=1, keepdims=True)
  # sqrt(|x|^2 + eps^2) keeps the gradient finite when a centred vector is exactly 0
  # (e.g. a single position at the coarsest scale).
  return centred * jax.lax.rsqrt(jnp.sum(jnp.square(centred), axis=-1, keepdims=True) + eps ** 2)


def _warp_block(q: jnp.ndarray, k: jnp.ndarray, values_and_ones: jnp.ndarray,
                temperature: float):
  """softmax(sim / T) @ v and max(sim), with the softmax's denominator from the same product.

  `values_and_ones` is [v, 1] (a column of ones appended once, by the caller):
  exp((sim - max) / T) @ [v, 1] gives numerator and denominator in one matrix product, so
  neither the forward nor the backward reduces over the (N_q, N_k) map except for the max
  (the shift, a constant to the gradient: softmax ignores it), and the map is never divided.
  Same values as jax.nn.softmax up to rounding (tests/test_histogram.py).
  """
  sim = jnp.einsum('bqc,bkc->bqk', q, k)  # cosine similarity, eq. (2)
  best = jnp.max(sim, axis=-1, keepdims=True)
  weights = jnp.exp((sim - jax.lax.stop_gradient(best)) / temperature)
  out = jnp.einsum('bqk,bkv->bqv', weights, values_and_ones)
  return out[..., :-1] / out[..., -1:], best


def warp_dense(query: jnp.ndarray, key: jnp.ndarray, values: jnp.ndarray,
               temperature: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Reference implementation materialising the full (N_q, N_k) map; for tests."""
  return warp_histogram(query, key, values, temperature, chunk=query.shape[1])


Arrays = Union[jnp.ndarray, Sequence[jnp.ndarray]]


def concat_positions(x: Arrays) -> jnp.ndarray:
  """One (B, N, C) array, or several (B, N_r, C) -> (B, sum N_r, C)."""
  if isinstance(x, (list, tuple)):
    return x[0] if len(x) == 1 else jnp.concatenate(list(x), axis=1)
  return x


def warp_histogram(query: jnp.ndarray, key: Arrays, values: Arrays,
                   temperature: float, chunk: int = 1024) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Warps reference values onto input positions by the softmax similarity.

  Args:
    query: (B, N_q, C) input features M_i^I (eq. 1).
    key: (B, N_k, C) reference features M_i^R, or one (B, N_r, C) per reference (several
      references: concatenated along positions and centred together, module docstring).
    values: (B, N_k, V) reference values (SPHist h_i, or raw ab for the ablation), or one
      (B, N_r, V) per reference, in the order of `key`.
    temperature: softmax temperature over reference positions.
    chunk: query positions per block (memory ~ B * chunk * N_k floats).

  Returns:
    warped: (B, N_q, V) softmax(Phi / T) @ values.
    confidence: (B, N_q, 1) the best cosine similarity of each input position.
  """
  q = center_and_normalize(query)
  k = center_and_normalize(concat_positions(key))
  v = concat_positions(values).astype(jnp.float32)
  v = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)  # [v, 1]
  b, n_q, c = q.shape
  # A symbolic n_q (export --format=stablehlo) has no known size to compare: always chunked.
  if not jax.export.is_symbolic_dim(n_q) and n_q <= chunk:
    return _warp_block(q, k, v, temperature)
  num_chunks = -(-n_q // chunk)
  pad = num_chunks * chunk - n_q
  q = jnp.pad(q, ((0, 0), (0, pad), (0, 0)))
  q = q.reshape(b, num_chunks, chunk, c).transpose(1, 0, 2, 3)
  block = jax.checkpoint(functools.partial(_warp_block, k=k, values_and_ones=v,
                                           temperature=temperature))
  warped, conf = jax.lax.map(lambda qc: block(qc), q)
  warped = warped.transpose(1, 0, 2, 3).reshape(b, num_chunks * chunk, -1)[:, :n_q]
  conf = conf.transpose(1, 0, 2, 3).reshape(b, num_chunks * chunk, 1)[:, :n_q]
  return warped, conf
