"""Latent diffusion in Wan et al.'s latent space: the cosine noise schedule, the forward process,
the DDIM sampler and the denoising U-Net (methods/wan_ldm.py puts them behind the interface;
losses/wan_ldm.py holds the denoising loss; docs/MODEL.md, "Latent diffusion in Wan et al.'s
latent space", lists every choice and its source).

  cosine_alphas_cumprod   Nichol & Dhariwal 2021, eq. 17 (with their beta clip at 0.999)
  q_sample                Ho et al. 2020, eq. 4: z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
  to_eps_x0 / v_target    epsilon- or v-parameterisation (Salimans & Ho 2022, sec. 4)
  ddim_sample             Song et al. 2021, eq. 12, with eta (eq. 16), "trailing" timesteps
  LatentUNet              Ho et al. 2020's U-Net (App. B) on latents: sinusoidal time embedding,
                          GroupNorm/SiLU residual blocks, self-attention at the coarsest scale,
                          the condition concatenated to the input (Rombach et al. 2022, sec. 3.3)

Time is discrete, t in {0, ..., T - 1} (0-based: index t is Ho et al.'s t + 1).
"""

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pikfix_jax.models import layers

PARAMETERIZATIONS = ('eps', 'v')
MAX_BETA = 0.999  # Nichol & Dhariwal 2021, sec. 3.2: "clip beta_t to be no larger than 0.999"


# ------------------------------------------------------------------------- schedule

def cosine_alpha_bar(t: np.ndarray, s: float = 0.008) -> np.ndarray:
  """f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) pi / 2), t in [0, 1] (Nichol & Dhariwal
  eq. 17, t / T written as t)."""
  f = lambda u: np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2
  return f(np.asarray(t, np.float64)) / f(0.0)


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> np.ndarray:
  """abar at t = 0 .. T-1 (float64): beta_t = min(1 - abar(t+1 / T) / abar(t / T), 0.999),
  abar = cumprod(1 - beta) (improved-diffusion's `betas_for_alpha_bar`). Unclipped, entry t
  equals cosine_alpha_bar((t + 1) / T); the clip only touches the last steps (abar -> 0)."""
  grid = np.arange(timesteps + 1, dtype=np.float64) / timesteps
  ab = cosine_alpha_bar(grid, s)
  betas = np.minimum(1.0 - ab[1:] / ab[:-1], MAX_BETA)
  return np.cumprod(1.0 - betas)


def _expand(a: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  """(B,) -> (B, 1, ..., 1) broadcasting against `like`."""
  return jnp.reshape(a, a.shape + (1,) * (like.ndim - a.ndim))


def q_sample(z0: jnp.ndarray, noise: jnp.ndarray, abar: jnp.ndarray) -> jnp.ndarray:
  """Ho et al. eq. 4 (reparameterised): z_t = sqrt(abar) z_0 + sqrt(1 - abar) eps; abar (B,)."""
  abar = _expand(abar, z0)
  return jnp.sqrt(abar) * z0 + jnp.sqrt(1.0 - abar) * noise


def v_target(z0: jnp.ndarray, noise: jnp.ndarray, abar: jnp.ndarray) -> jnp.ndarray:
  """v = sqrt(abar) eps - sqrt(1 - abar) z_0 (Salimans & Ho 2022, sec. 4 / App. D)."""
  abar = _expand(abar, z0)
  return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * z0


def to_eps_x0(prediction: jnp.ndarray, z_t: jnp.ndarray, abar: jnp.ndarray,
              parameterization: str, x0_clip: float = 0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The network's output -> (eps, z_0) predictions.

  'eps' (Ho et al.): z_0 = (z_t - sqrt(1 - abar) eps) / sqrt(abar), which divides by
  sqrt(abar) ~ 5e-5 at the cosine schedule's last step (every error x 2e4), hence the optional
  clip of z_0 to [-x0_clip, x0_clip] (Ho et al. clip images to [-1, 1]), eps then re-derived.
  'v' (Salimans & Ho): z_0 = sqrt(abar) z_t - sqrt(1 - abar) v, eps = sqrt(1 - abar) z_t +
  sqrt(abar) v: bounded at every t, so no clip is needed (the default, docs/MODEL.md)."""
  abar = _expand(abar, z_t)
  a, b = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
  if parameterization == 'eps':
    eps = prediction
    x0 = (z_t - b * eps) / a
  elif parameterization == 'v':
    x0 = a * z_t - b * prediction
    eps = b * z_t + a * prediction
  else:
    raise ValueError(f'parameterization={parameterization!r}; use one of {PARAMETERIZATIONS}')
  if x0_clip > 0:
    x0 = jnp.clip(x0, -x0_clip, x0_clip)
    eps = (z_t - a * x0) / b
  return eps, x0


# -------------------------------------------------------------------------- sampler

def ddim_timesteps(i: jnp.ndarray, steps: jnp.ndarray, timesteps: int
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(t, t_prev) of sampling step i of `steps`: t = floor(T (S - i) / S) - 1, "trailing"
  spacing (Lin et al. 2024, Table 2), so the first step is always t = T - 1 (pure noise, where
  the sampler starts) and the last lands on t_prev = -1 (abar_{-1} = 1: z_0 itself). One step
  is then a single z_0 prediction from noise. Integer arithmetic on traced values: the step
  count need not be static."""
  t = (timesteps * (steps - i)) // steps - 1
  t_prev = (timesteps * (steps - i - 1)) // steps - 1
  return t, t_prev


def ddim_sample(denoise: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray], z_T: jnp.ndarray,
                key: jax.Array, steps: Any, eta: Any, alphas_cumprod: jnp.ndarray,
                parameterization: str = 'v', x0_clip: float = 0.0) -> jnp.ndarray:
  """DDIM (Song et al. 2021, eq. 12): for each step t -> t_prev,

    z_prev = sqrt(abar_prev) z0^ + sqrt(1 - abar_prev - sigma^2) eps^ + sigma n,  n ~ N(0, I),
    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)   (eq. 16)

  eta = 0: the deterministic DDIM; eta = 1: DDPM's ancestral sampler on the sub-sequence.
  `denoise(z_t, t)` returns the network's prediction (`parameterization`) for a batch and
  a (B,) int32 t. A `lax.fori_loop` whose trip count is the (traced) `steps`: one compiled
  program serves every step count and eta of the same shapes (tests/test_models_ldm.py counts
  the traces)."""
  timesteps = alphas_cumprod.shape[0]
  ac = jnp.asarray(alphas_cumprod, jnp.float32)
  steps = jnp.asarray(steps, jnp.int32)
  eta = jnp.asarray(eta, jnp.float32)
  batch = z_T.shape[0]

  def body(i, carry):
    z, key = carry
    t, t_prev = ddim_timesteps(i, steps, timesteps)
    abar = ac[t]
    abar_prev = jnp.where(t_prev >= 0, ac[jnp.maximum(t_prev, 0)], 1.0)
    prediction = denoise(z, jnp.full((batch,), t, jnp.int32)).astype(jnp.float32)
    eps, x0 = to_eps_x0(prediction, z, jnp.full((batch,), abar), parameterization, x0_clip)
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
    key, sub = jax.random.split(key)
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma ** 2, 0.0))
    z = (jnp.sqrt(abar_prev) * x0 + direction * eps +
         sigma * jax.random.normal(sub, z.shape, jnp.float32))
    return z, key

  z, _ = jax.lax.fori_loop(0, steps, body, (z_T.astype(jnp.float32), key))
  return z


# --------------------------------------------------------------------------- U-Net

def timestep_embedding(t: jnp.ndarray, dim: int, max_period: float = 10000.0) -> jnp.ndarray:
  """Sinusoidal embedding of t (B,) -> (B, dim) (Vaswani et al. 2017 sec. 3.5, as Ho et al.
  2020 App. B embed the timestep): [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / half)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def _groups(channels: int, wanted: int = 32) -> int:
  """GroupNorm groups: Ho et al.'s 32, or the largest divisor of the width below it (tiny
  widths in tests)."""
  return math.gcd(channels, wanted)


class TimeResBlock(nn.Module):
  """Ho et al.'s residual block (the Wide-ResNet block of their App. B): GN, SiLU, 3x3 conv,
  + Dense(time embedding), GN, SiLU, dropout, 3x3 conv (zero-initialised, so each block
  starts as the identity: improved-diffusion's `zero_module`), 1x1 skip when widths differ."""
  features: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, emb: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    gn = lambda name: nn.GroupNorm(_groups(x.shape[-1] if name == 'norm0' else self.features),
                                   dtype=self.dtype, name=name)
    h = layers.Conv(self.features, (3, 3), dtype=self.dtype, name='conv0')(nn.silu(gn('norm0')(x)))
    h = h + nn.Dense(self.features, dtype=self.dtype, name='time')(nn.silu(emb))[:, None, None]
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(gn('norm1')(h)))
    h = layers.Conv(self.features, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    name='conv1')(h)
    if x.shape[-1] != self.features:
      x = layers.Conv(self.features, (1, 1), dtype=self.dtype, name='skip')(x)
    return x + h


class SelfAttention(nn.Module):
  """Multi-head self-attention over all positions with a residual (Ho et al. App. B: "self-
  attention blocks at the 16 x 16 resolution"; here at the coarsest latent scale), output
  projection zero-initialised. Softmax in float32."""
  heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    y = nn.GroupNorm(_groups(c), dtype=self.dtype, name='norm')(x).reshape(b, h * w, c)
    qkv = nn.Dense(3 * c, dtype=self.dtype, name='qkv')(y)
    q, k, v = jnp.split(qkv.reshape(b, h * w, 3, self.heads, c // self.heads), 3, axis=2)
    q, k, v = (a[:, :, 0] for a in (q, k, v))  # (b, n, heads, d)
    logits = jnp.einsum('bnhd,bmhd->bhnm', q, k).astype(jnp.float32) / math.sqrt(c // self.heads)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhnm,bmhd->bnhd', weights, v).reshape(b, h * w, c)
    out = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='proj')(out)
    return x + out.reshape(b, h, w, c)


class LatentUNet(nn.Module):
  """The denoiser epsilon_theta(z_t, t, c) on latents (B, h, w, C) (Ho et al. 2020, App. B,
  sized for a 64 x 64 x 64 latent): input conv to widths[0]; per level `res_blocks`
  TimeResBlocks, a stride-2 3x3 conv between levels; the coarsest level's blocks each followed
  by self-attention; a middle ResBlock-Attention-ResBlock; the mirrored decoder with skip
  concatenations and nearest x2 + 3x3 conv up-sampling; GN, SiLU, 3x3 conv (zero-initialised)
  to C. The condition (E_{R,X}(x), [the latent scratch mask]) is concatenated to z_t at the
  input (Rombach et al. 2022, sec. 3.3, "concatenation" for image-to-image tasks).

  Any h, w: reflect-padded to a multiple of 2^(levels - 1) and cropped back. `dtype`: the
  compute dtype (params float32); the output is float32."""
  widths: Sequence[int] = (128, 256, 256)
  res_blocks: int = 2
  heads: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z_t: jnp.ndarray, t: jnp.ndarray, condition: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
    channels = z_t.shape[-1]
    x = jnp.concatenate([z_t, condition.astype(z_t.dtype)], axis=-1)
    x, hw = layers.pad_to_multiple(x, 2 ** (len(self.widths) - 1))
    x = x.astype(self.dtype)
    dim = 4 * self.widths[0]
    emb = timestep_embedding(t, self.widths[0])
    emb = nn.Dense(dim, dtype=self.dtype, name='time0')(emb)
    emb = nn.Dense(dim, dtype=self.dtype, name='time1')(nn.silu(emb))
    block = lambda f, name: TimeResBlock(f, self.dropout, self.dtype, name=name)
    attention = lambda name: SelfAttention(self.heads, self.dtype, name=name)
    coarsest = len(self.widths) - 1

    x = layers.Conv(self.widths[0], (3, 3), dtype=self.dtype, name='stem')(x)
    skips = [x]
    for level, width in enumerate(self.widths):
      for i in range(self.res_blocks):
        x = block(width, f'down{level}_{i}')(x, emb, train)
        if level == coarsest:
          x = attention(f'down{level}_{i}_attn')(x)
        skips.append(x)
      if level < coarsest:
        x = layers.Conv(width, (3, 3), strides=(2, 2), dtype=self.dtype,
                        name=f'downsample{level}')(x)
        skips.append(x)
    x = block(self.widths[-1], 'mid0')(x, emb, train)
    x = attention('mid_attn')(x)
    x = block(self.widths[-1], 'mid1')(x, emb, train)
    for level in reversed(range(len(self.widths))):
      for i in range(self.res_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = block(self.widths[level], f'up{level}_{i}')(x, emb, train)
        if level == coarsest:
          x = attention(f'up{level}_{i}_attn')(x)
      if level > 0:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = layers.Conv(self.widths[level], (3, 3), dtype=self.dtype,
                        name=f'upsample{level}')(x)
    x = nn.silu(nn.GroupNorm(_groups(x.shape[-1]), dtype=self.dtype, name='out_norm')(x))
    x = layers.Conv(channels, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    name='out')(x)
    return layers.crop_to(x, hw).astype(jnp.float32)
