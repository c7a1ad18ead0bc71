"""Latent diffusion restoration in Wan et al.'s latent space (issue 35; methods/wan_ldm.py):
Wan et al.'s VAE stage exactly (configs/baselines/wan2020.py's model, loss and optimiser), then a
denoising U-Net on VAE2's latent conditioned on VAE1's latent of the degraded photo, sampled by
DDIM and decoded by G_Y.

  python -m pikfix_jax.main --config=configs/baselines/wan_ldm.py --workdir=W
  python -m pikfix_jax.main ... --config.train.stage=diffusion   # one stage alone

Ablations (config switches; docs/MODEL.md, "Latent diffusion in Wan et al.'s latent space"):
  --config.model.sampling_steps=1 / 10 / 50     DDIM steps (evaluate takes it from --config)
  --config.model.condition_mask=True            the scratch mask as one more condition
                                                channel (adds the scratch stage)
  --config.model.denoiser=mapping               Wan et al.'s one-shot mapping T instead
                                                (stages vae -> mapping -> scratch = wan2020)
  --config.model.guidance=classifier_free       classifier-free guidance (Ho & Salimans 2022)
  --config.model.parameterization=eps           epsilon-prediction (default v)
"""

import ml_collections

from configs.baselines import wan2020


def get_config() -> ml_collections.ConfigDict:
  c = wan2020.get_config()  # the data, VAE, discriminator, loss and optimiser of Wan et al.
  c.method = 'wan_ldm'
  m = c.model
  m.denoiser = 'diffusion'  # 'diffusion' or 'mapping' (Wan et al.'s T: the ablation).
  # The denoiser U-Net (models/ldm.py, Ho et al. 2020 App. B at a 64 x 64 latent): level widths
  # (self-attention at the last, 16 x 16 for a 256 crop), residual blocks per level, heads.
  m.unet_widths = (128, 256, 256)
  m.unet_res_blocks = 2
  m.unet_heads = 4
  m.unet_dropout = 0.0  # Ho et al. use 0.1 on CIFAR-10, 0 on the larger sets.
  m.dtype = 'float32'  # Compute dtype of the denoiser ('bfloat16' on GPUs); the VAEs stay f32.
  m.condition_mask = False  # Also condition on the scratch mask (adds the 'scratch' stage).
  m.timesteps = 1000  # T (Ho et al.; Nichol & Dhariwal).
  m.cosine_s = 0.008  # s of the cosine schedule (Nichol & Dhariwal eq. 17).
  m.parameterization = 'v'  # 'v' (Salimans & Ho 2022) or 'eps' (Ho et al. 2020).
  m.x0_clip = 0.0  # 'eps' only: clip the predicted latent to +-x0_clip (0 = off).
  m.latent_scale = 1.0  # z_0 = latent_scale * E_Y(y) (Rombach et al.'s scale factor; sec. 4.3.2)
  m.guidance = 'none'  # 'none' or 'classifier_free'.
  m.guidance_scale = 1.0  # w of classifier-free guidance (pred(c) + w (pred(c) - pred(0))).
  m.cond_drop_prob = 0.1  # Training: condition zeroed with this probability (CFG only).
  m.sampling_steps = 50  # DDIM steps at inference (1, 10, 50 in the ablation).
  m.sampling_eta = 0.0  # DDIM eta: 0 deterministic (Song et al.), 1 DDPM-like.
  m.sampling_seed = 0  # Seed of z_T and of eta > 0's noise (evaluate over 0, 1, 2).
  # The denoiser's optimiser: config.optim (Wan et al.'s Adam) with these fields replaced.
  o = c.diffusion_optim = ml_collections.ConfigDict()
  o.learning_rate = 1e-4  # Ho et al. 2e-4 (CIFAR) / 2e-5 (256 px); Rombach et al. ~1e-4.
  o.b1 = 0.9
  o.b2 = 0.999
  o.grad_clip = 1.0  # Ho et al.'s gradient clipping at global norm 1.
  t = c.train
  # Both derived from the model section here (methods.wan_ldm.stage_names).
  del t['stages']
  del t['stage_steps']
  # Steps of each stage; only the stages the model section trains run, in the order
  # vae -> diffusion | mapping -> scratch.
  t.stage_steps = ml_collections.ConfigDict(
      {'vae': 50000, 'diffusion': 100000, 'mapping': 50000, 'scratch': 20000})
  return c
