"""Masked softmax attention (Wan et al. 2020, eqs. 7-9), memory-bounded.

O_i = sum_j s_ij v_j with s_ij = keep_j exp(q_i . k_j) / sum_l keep_l exp(q_i . k_l) (eq. 7 with
eq. 8's embedded Gaussian f_ij = exp(theta(F_i) . phi(F_j))). The (N_q, N_k) weights are never
materialised: queries are processed in chunks (as ops/warp.py does for Pik-Fix's eq. 2) and,
for each query chunk, keys in chunks with an online softmax (flash attention: a running max,
denominator and numerator), so memory grows as chunk_q * chunk_k per block plus O(N) running
sums, not N_q * N_k.
"""

import functools

import jax
import jax.numpy as jnp

_F32_MIN = float(jnp.finfo(jnp.float32).min)  # the running max before any kept key


def _split(x: jnp.ndarray, chunk: int, value: float | bool = 0) -> tuple[jnp.ndarray, int]:
  """(B, N, ...) -> (num_chunks, B, chunk, ...), padding N with `value` to a multiple of chunk."""
  b, n = x.shape[:2]
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=value)
  x = x.reshape((b, num_chunks, chunk) + x.shape[2:])
  return jnp.moveaxis(x, 1, 0), num_chunks


def _key_step(q: jnp.ndarray, carry: tuple, key_block: tuple) -> tuple[tuple, None]:
  """One key chunk of the online softmax for one query chunk.

  carry = (running max (B, cq, 1), denominator (B, cq, 1), numerator (B, cq, V)), all float32;
  key_block = (k (B, ck, C), v (B, ck, V) float32, keep (B, 1, ck)).
  Masked keys are excluded exactly, as `models.wan.masked_softmax` does and written the same
  way, without infinities: their logits are replaced by the max before exp (exp(0), finite in
  both passes) and their weights by an exact 0.
  """
  peak, total, acc = carry
  k, v, keep = key_block
  # f32 accumulation of the logits even for bf16 features.
  logits = jnp.einsum('bqc,bkc->bqk', q, k, preferred_element_type=jnp.float32)
  block_peak = jnp.max(jnp.where(keep, logits, _F32_MIN), axis=-1, keepdims=True)
  # The shift is a constant to the gradient: the result is exactly invariant to it (each exp
  # is rescaled by exp(old - new) below), and stopping it keeps the backward free of
  # exp(-huge) * huge products at the _F32_MIN sentinel.
  new_peak = jax.lax.stop_gradient(jnp.maximum(peak, block_peak))
  e = jnp.where(keep, jnp.exp(jnp.where(keep, logits, new_peak) - new_peak), 0.0)
  # exp(old - new) <= 1; 0 when no key was kept before (old = sentinel, total = acc = 0).
  rescale = jnp.exp(peak - new_peak)
  total = rescale * total + jnp.sum(e, axis=-1, keepdims=True)
  acc = rescale * acc + jnp.einsum('bqk,bkv->bqv', e, v)
  return (new_peak, total, acc), None


def _query_block(q: jnp.ndarray, keys: jnp.ndarray, values: jnp.ndarray,
                 keep: jnp.ndarray) -> jnp.ndarray:
  """Attention output (B, cq, V) float32 of one query chunk over all key chunks (scanned)."""
  b, cq = q.shape[:2]
  v_dim = values.shape[-1]
  init = (jnp.full((b, cq, 1), _F32_MIN, jnp.float32), jnp.zeros((b, cq, 1), jnp.float32),
          jnp.zeros((b, cq, v_dim), jnp.float32))
  # Checkpointed: the backward keeps only the (B, cq, V) carries per key chunk and recomputes
  # each (cq, ck) block, instead of storing every block's weights (cq * N_k per query chunk).
  step = jax.checkpoint(functools.partial(_key_step, q))
  (_, total, acc), _ = jax.lax.scan(step, init, (keys, values, keep))
  # A query with no kept key has total = acc = 0: output 0, as masked_softmax's all-0 row.
  return acc / jnp.where(total > 0, total, 1.0)


def masked_attention(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray,
                     keep: jnp.ndarray, query_chunk: int = 1024,
                     key_chunk: int = 1024) -> jnp.ndarray:
  """softmax over kept keys of (query . key) applied to value (eqs. 7-9), chunked.

  Equals masked_softmax(einsum('bqc,bkc->bqk', query, key), keep[:, None]) @ value up to
  float32 rounding, with the weights of masked keys exactly 0 and a query with no kept key
  giving 0.

  Args:
    query: (B, N_q, C) theta(F).
    key: (B, N_k, C) phi(F).
    value: (B, N_k, V) mu(F).
    keep: (B, N_k) bool, True where key j may be attended to (eq. 7: 1 - m_j).
    query_chunk: queries per block; any N_q (padded, the padding's rows dropped).
    key_chunk: keys per block; any N_k (padded with masked keys).

  Returns:
    (B, N_q, V) in the inputs' dtype; computed in float32 (logits accumulated in float32 even
    for bfloat16 inputs; softmax sums and the weighted sum in float32).
  """
  out_dtype = jnp.result_type(query, key, value)
  n_q = query.shape[1]
  # Shrink chunks larger than the inputs (no point padding 7 keys to 1024); a symbolic size
  # (export with shape polymorphism) keeps the given chunk.
  if not jax.export.is_symbolic_dim(n_q):
    query_chunk = min(query_chunk, n_q)
  if not jax.export.is_symbolic_dim(key.shape[1]):
    key_chunk = min(key_chunk, key.shape[1])
  keys, _ = _split(key, key_chunk)
  values, _ = _split(value.astype(jnp.float32), key_chunk)
  keep, _ = _split(keep.astype(bool), key_chunk, False)  # padding keys: masked
  keep = keep[:, :, None, :]  # (num_k, B, 1, ck): broadcasts over the query rows
  queries, num_q = _split(query, query_chunk)
  # Checkpointed as ops/warp.py's blocks: the outer map stores only its query chunks for the
  # backward, which re-runs one query chunk's scan at a time.
  block = jax.checkpoint(functools.partial(_query_block, keys=keys, values=values, keep=keep))
  out = jax.lax.map(block, queries)  # (num_q, B, cq, V)
  b = query.shape[0]
  out = jnp.moveaxis(out, 0, 1).reshape(b, num_q * query_chunk, -1)[:, :n_q]
  return out.astype(out_dtype)
