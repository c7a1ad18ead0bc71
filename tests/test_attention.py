"""Chunked masked attention (pikfix_jax/ops/attention.py) against the dense masked softmax of
Wan et al.'s partial nonlocal block (eqs. 7-9, models/wan.py `masked_softmax`): values,
gradients, exact exclusion of masked keys, bfloat16 inputs, and the block with and without
chunking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pikfix_jax.models import wan
from pikfix_jax.ops import attention

KEY = jax.random.PRNGKey(0)
N_Q, N_K = 37, 29  # odd sizes: no chunk below divides them


def _inputs(seed: int = 0, scale: float = 1.0):
  """q (3, N_Q, 5), k (3, N_K, 5), v (3, N_K, 4) and keep (3, N_K): batch 0 random, batch 1
  all masked (every query row has no kept key), batch 2 only its last two keys kept (the first
  kept key in the last key chunk: the running max and sums start late)."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(3, N_Q, 5)).astype(np.float32) * scale
  k = rng.normal(size=(3, N_K, 5)).astype(np.float32)
  v = rng.normal(size=(3, N_K, 4)).astype(np.float32)
  keep = rng.uniform(size=(3, N_K)) > 0.4
  keep[1] = False
  keep[2] = False
  keep[2, -2:] = True
  assert 0 < keep[0].sum() < N_K
  return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(keep)


def _dense(q, k, v, keep):
  """What the block computed before chunking: the (N_q, N_k) weights, then eq. 9's sum."""
  weights = wan.masked_softmax(jnp.einsum('bic,bjc->bij', q, k), keep[:, None, :])
  return jnp.einsum('bij,bjc->bic', weights, v)


CHUNKS = [(8, 6), (5, 29), (37, 4), (1, 1), (64, 64)]  # (query, key); 64: larger than N


@pytest.mark.parametrize('query_chunk,key_chunk', CHUNKS)
def test_chunked_matches_dense(query_chunk, key_chunk):
  q, k, v, keep = _inputs(scale=10.0)  # logits up to ~100: the running max matters
  got, want = jax.jit(lambda: (attention.masked_attention(q, k, v, keep, query_chunk, key_chunk),
                               _dense(q, k, v, keep)))()
  assert got.shape == (3, N_Q, 4) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[1], 0.0)  # no kept key: 0, as masked_softmax's 0 rows


def test_masked_keys_are_excluded_exactly():
  """Keys and values at masked positions do not change the output by a single bit."""
  q, k, v, keep = _inputs(1)
  masked = ~np.asarray(keep)[..., None]
  rng = np.random.default_rng(5)
  k2 = jnp.where(masked, rng.normal(size=k.shape) * 1e3, k)
  v2 = jnp.where(masked, rng.normal(size=v.shape) * 1e3, v)
  run = jax.jit(lambda kk, vv: attention.masked_attention(q, kk, vv, keep, 8, 6))
  np.testing.assert_array_equal(run(k, v), run(k2, v2))


def test_gradients_match_dense():
  q, k, v, keep = _inputs(2, scale=3.0)
  weights = jnp.asarray(np.random.default_rng(7).normal(size=(3, N_Q, 4)), jnp.float32)

  def grads(fn):
    return jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a, keep)) * weights), argnums=(0, 1, 2))(
        q, k, v)

  want, got = jax.jit(lambda: (grads(_dense), grads(
      lambda *a: attention.masked_attention(*a, query_chunk=8, key_chunk=6))))()
  for g, w in zip(got, want):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  # masked keys get no gradient at all; neither does the all-masked batch element
  np.testing.assert_array_equal(np.asarray(got[1])[~np.asarray(keep)], 0.0)
  np.testing.assert_array_equal(got[0][1], 0.0)


def test_bfloat16_inputs_accumulate_in_float32():
  """bf16 q, k, v: logits and sums in float32, so the result is the float32 one on the same
  (bf16-representable) values, rounded once to bf16."""
  q, k, v, keep = _inputs(3, scale=3.0)
  q, k, v = (t.astype(jnp.bfloat16) for t in (q, k, v))
  got, want = jax.jit(lambda: (attention.masked_attention(q, k, v, keep, 8, 6),
                               _dense(*(t.astype(jnp.float32) for t in (q, k, v)), keep)))()
  assert got.dtype == jnp.bfloat16
  # one bf16 rounding of the float32 result: 2^-8 relative
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2 ** -8, atol=1e-6)


def _block_inputs():
  rng = np.random.default_rng(0)
  f = rng.uniform(-1.0, 1.0, (2, 6, 7, 8)).astype(np.float32)
  m = (rng.uniform(size=(2, 6, 7, 1)) > 0.65).astype(np.float32)
  m[1, :3] = 1.0  # more defects in the second image
  return jnp.asarray(f), jnp.asarray(m)


def test_partial_nonlocal_block_chunked_equals_dense():
  """PartialNonLocalBlock with 42 positions in chunks of 8 (eq. 9 by the online softmax)
  equals the dense block (attention_chunk=0), outputs and parameter gradients; the default
  (chunk 1024 > 42 positions) is the dense computation, bit for bit."""
  f, m = _block_inputs()
  # global_res=0: the fused output is eq. 9's O (through W) at defects, F elsewhere, so the
  # gradients compare the attention's (the residual blocks' instance norms would amplify
  # float32 rounding into their own, attention-unrelated, gradient noise).
  dense = wan.PartialNonLocalBlock(global_res=0, attention_chunk=0)
  chunked = wan.PartialNonLocalBlock(global_res=0, attention_chunk=8)
  # Parameters at std 0.5 instead of 0.02, so logits are O(1) and theta / phi get gradients
  # well above the tolerance.
  params = jax.tree.map(lambda t: 25.0 * t, dense.init(KEY, f, m)['params'])

  @jax.jit
  def run(p):
    out = {name: block.apply({'params': p}, f, m, return_intermediates=True)
           for name, block in (('dense', dense), ('chunked', chunked))}
    out['default'] = wan.PartialNonLocalBlock(global_res=0).apply({'params': p}, f, m)
    out['grads'] = {name: jax.grad(lambda q: jnp.sum(jnp.sin(block.apply({'params': q}, f, m))))(p)
                    for name, block in (('dense', dense), ('chunked', chunked))}
    return out

  out = run(params)
  (want, want_inter), (got, got_inter) = out['dense'], out['chunked']
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_inter['nonlocal'], want_inter['nonlocal'], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got_inter['weights'], want_inter['weights'])  # asked: dense
  np.testing.assert_array_equal(out['default'], want)
  grads = out['grads']
  for g, w in zip(jax.tree.leaves(grads['chunked']), jax.tree.leaves(grads['dense'])):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(grads['chunked']['phi']['kernel']).max()) > 1.0  # not vacuous
