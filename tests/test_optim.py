"""Optimisers and learning-rate schedules (pikfix_jax/optim.py): Pik-Fix's unchanged, the linear
decay of Pix2pix (junyanz's LambdaLR) and of Wan et al. (pix2pixHD's per-epoch update) against
their reference code, and Adam's epsilon from the config."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import default
from configs.baselines import cms4cv_unet
from configs.baselines import pix2pix
from configs.baselines import wan2020
from pikfix_jax import optim

STEPS_PER_EPOCH = 3


def _rates(config, epochs: int) -> np.ndarray:
  """schedule(count) for every update of `epochs` epochs, shape (epochs, STEPS_PER_EPOCH)."""
  fn = optim.schedule(config, STEPS_PER_EPOCH)
  counts = np.arange(epochs * STEPS_PER_EPOCH)
  return np.asarray([float(fn(c)) for c in counts]).reshape(epochs, STEPS_PER_EPOCH)


def test_pikfix_default_optimizer_is_unchanged():
  """The paper's exponential staircase, bit for bit the optimiser built before optim.py."""
  c = default.get_config()
  o = c.optim
  assert o.lr_schedule == 'exponential'
  before = optax.adam(optax.exponential_decay(o.learning_rate, STEPS_PER_EPOCH, o.decay_rate,
                                              staircase=True), b1=o.b1, b2=o.b2)
  now = optim.make_optimizer(c, STEPS_PER_EPOCH)
  params = {'w': jnp.linspace(-1.0, 1.0, 7)}
  states = [before.init(params), now.init(params)]
  for step in range(8):  # crosses two epoch boundaries
    grads = {'w': jnp.sin(params['w'] * (step + 1)) * 10.0 ** -(step % 4)}
    (a, states[0]), (b, states[1]) = (before.update(grads, states[0]),
                                      now.update(grads, states[1]))
    np.testing.assert_array_equal(np.asarray(a['w']), np.asarray(b['w']))
    # The logged rate: lr * 0.99^epoch.
    assert float(optim.learning_rate(c, step, STEPS_PER_EPOCH)) == pytest.approx(
        1e-4 * 0.99 ** (step // STEPS_PER_EPOCH), rel=1e-6)


def test_pix2pix_schedule_is_junyanz_lambda_rule():
  """Constant 2e-4 for 100 epochs, then linear over 100 as junyanz's LambdaLR (stepped once per
  epoch, lr_l = 1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1))."""
  c = pix2pix.get_config()
  rates = _rates(c, 205)
  # Within an epoch the rate does not change.
  assert (rates == rates[:, :1]).all()
  e = np.arange(205)
  closed = 2e-4 * np.maximum(0.0, 1 - np.maximum(0, e + 1 - 100) / 101)
  np.testing.assert_allclose(rates[:, 0], closed, rtol=1e-6, atol=1e-11)
  assert rates[99, 0] == pytest.approx(2e-4) and rates[100, 0] == pytest.approx(2e-4 * 100 / 101)
  assert rates[199, 0] == pytest.approx(2e-4 / 101, rel=1e-5) and (rates[200:] == 0).all()

  # junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py get_scheduler('linear').
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.Adam([param], lr=2e-4)
  rule = lambda epoch: 1.0 - max(0, epoch + 1 - 100) / float(100 + 1)
  scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=rule)
  torch_rates = []
  for _ in range(200):  # train.py: one epoch at the current rate, then scheduler.step()
    torch_rates.append(opt.param_groups[0]['lr'])
    opt.step()
    scheduler.step()
  np.testing.assert_allclose(rates[:200, 0], torch_rates, rtol=1e-6)


def test_wan_schedule_is_the_release_update_rule():
  """Wan et al.'s release (pix2pixHD's loop, --niter 100 --niter_decay 100): after every epoch
  past the 100th, lr -= lr0 / niter_decay."""
  c = wan2020.get_config()
  rates = _rates(c, 203)
  lr0, niter, niter_decay = 2e-4, 100, 100
  old_lr, release = lr0, []
  for epoch in range(1, niter + niter_decay + 1):
    release.append(old_lr)  # the epoch trains at the current rate
    if epoch > niter:  # then train_mapping.py calls update_learning_rate()
      old_lr -= lr0 / niter_decay
  np.testing.assert_allclose(rates[:200, 0], release, rtol=1e-6, atol=1e-11)
  assert rates[100, 0] == pytest.approx(2e-4) and rates[199, 0] == pytest.approx(2e-6, rel=1e-5)
  assert (rates[200:] == 0).all()


def test_adam_applies_the_scheduled_rate_and_the_configured_epsilon():
  """With a constant gradient g, Adam's step is lr(count) * g / (|g| + eps): the schedule reaches
  the update, and optim.eps is the epsilon (CMS4CV: Keras' 1e-7)."""
  c = pix2pix.get_config()
  c.optim.constant_epochs, c.optim.decay_epochs = 1, 2  # 1 epoch at lr, then 2/3, 1/3, 0
  tx = optim.make_optimizer(c, STEPS_PER_EPOCH)
  params = jnp.zeros(())
  state = tx.init(params)
  steps = []
  for _ in range(4 * STEPS_PER_EPOCH):
    update, state = tx.update(jnp.ones(()), state)
    steps.append(-float(update))
  want = np.repeat([1.0, 2 / 3, 1 / 3, 0.0], STEPS_PER_EPOCH) * 2e-4 / (1 + 1e-8)
  np.testing.assert_allclose(steps, want, rtol=1e-5, atol=1e-11)
  np.testing.assert_allclose(
      [float(optim.learning_rate(c, n, STEPS_PER_EPOCH)) for n in range(len(steps))],
      want * (1 + 1e-8), rtol=1e-6, atol=1e-11)

  unet = cms4cv_unet.get_config()
  assert unet.optim.eps == 1e-7 and unet.optim.lr_schedule == 'exponential'
  g = jnp.full((), 1e-7)  # |g| = eps: Adam's first step is lr / 2
  update, _ = optim.make_optimizer(unet, 1).update(g, optim.make_optimizer(unet, 1).init(g))
  assert -float(update) == pytest.approx(1e-3 / 2, rel=1e-4)


def test_old_configs_and_bad_schedules():
  """A config.json from before these fields trains as before; an unknown schedule is a one-line
  error naming the known ones."""
  c = default.get_config()
  for field in ('lr_schedule', 'eps', 'constant_epochs', 'decay_epochs'):
    del c.optim[field]
  fn = optim.schedule(c, STEPS_PER_EPOCH)
  assert float(fn(2 * STEPS_PER_EPOCH)) == pytest.approx(1e-4 * 0.99 ** 2, rel=1e-6)
  optim.make_optimizer(c, STEPS_PER_EPOCH).init(jnp.zeros(()))
  c = default.get_config()
  c.optim.lr_schedule = 'cosine'
  with pytest.raises(ValueError, match=r"lr_schedule 'cosine'; use one of exponential, "
                                       r'linear_decay'):
    optim.make_optimizer(c, STEPS_PER_EPOCH)
  c.optim.lr_schedule, c.optim.decay_epochs = 'linear_decay', -1
  with pytest.raises(ValueError, match='must be >= 0'):
    optim.make_optimizer(c, STEPS_PER_EPOCH)
