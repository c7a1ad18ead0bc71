r"""Converts torchvision (or lpips) weights into the Flax msgpack that config.backbones names.

  python -m data_prep.convert_weights --arch=resnet34 --input=resnet34-b627a593.pth \
      --output=weights/resnet34.msgpack
  python -m data_prep.convert_weights --arch=lpips_vgg --input=vgg16-397923af.pth \
      --lpips_heads=lpips/weights/v0.1/vgg.pth --output=weights/lpips_vgg.msgpack
  python -m data_prep.convert_weights --arch=lpips_alex --input=alexnet-owt-7be5be79.pth \
      --lpips_heads=lpips/weights/v0.1/alex.pth --output=weights/lpips_alex.msgpack
  python -m data_prep.convert_weights --arch=vgg19 --download --output=weights/vgg19.msgpack
  python -m data_prep.convert_weights --arch=deeplabv3_mobilenet_v3_large \
      --input=deeplabv3_mobilenet_v3_large-fc3c493d.pth --output=weights/deeplabv3_mbv3.msgpack
  python -m data_prep.convert_weights --arch=bopbtl --input=Bringing-Old-Photos-Back-to-Life \
      --output=weights/bopbtl

--arch=bopbtl reads the seven stage-1 checkpoints of Wan et al.'s release (the repository
root with Global/checkpoints unzipped, its Global folder or that checkpoints folder) and
writes a folder: one .msgpack per network and config.json (`wan_release.load` reads it).

--download (online machines only) fetches the torchvision weights from the Hugging Face Hub
(timm's '*.tv_in1k' repositories hold torchvision's original weights under the same keys) and
the LPIPS heads from the lpips GitHub repository; deeplabv3_mobilenet_v3_large and lpips_alex's
AlexNet (timm has neither) come from download.pytorch.org (TORCHVISION_URLS). See
docs/WEIGHTS.md.
"""

import os
import sys
import urllib.request

from absl import app
from absl import flags
from absl import logging

from pikfix_jax import wan_release
from pikfix_jax import weights

_ARCH = flags.DEFINE_enum('arch', None, list(weights.ARCHS) + [weights.BOPBTL_ARCH],
                          'Architecture of the weights.')
_INPUT = flags.DEFINE_string('input', None, 'torchvision .pth or .safetensors file; for '
                             'bopbtl, the release folder.')
_LPIPS_HEADS = flags.DEFINE_string('lpips_heads', None, 'lpips weights/v0.1/vgg.pth (lpips_vgg) '
                                   'or alex.pth (lpips_alex).')
_OUTPUT = flags.DEFINE_string('output', None, 'Converted Flax variables (.msgpack); for '
                              'bopbtl, a folder.')
_DOWNLOAD = flags.DEFINE_bool('download', False, 'Fetch the standard files first (needs network '
                              'and huggingface_hub); --input/--lpips_heads are then optional.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Download cache (default: the hub cache).')

# timm repositories holding torchvision's own ImageNet weights (same state-dict keys).
HUB_REPOS = {'resnet34': 'timm/resnet34.tv_in1k', 'vgg19': 'timm/vgg19.tv_in1k',
             'vgg16': 'timm/vgg16.tv_in1k'}
# torchvision files taken straight from download.pytorch.org (no huggingface_hub needed),
# stored where torchvision keeps them (~/.cache/torch/hub/checkpoints) unless --cache_dir.
TORCHVISION_URLS = {
    'deeplabv3_mobilenet_v3_large':
        'https://download.pytorch.org/models/deeplabv3_mobilenet_v3_large-fc3c493d.pth',
    'alexnet': 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
}
# The backbone each LPIPS arch converts, and the lpips package's v0.1 heads ({net}.pth).
LPIPS_BACKBONES = {'lpips_vgg': 'vgg16', 'lpips_alex': 'alexnet'}
LPIPS_HEADS_URL = ('https://github.com/richzhang/PerceptualSimilarity/raw/master/'
                   'lpips/weights/v0.1/{net}.pth')


def download_torchvision(arch: str, cache_dir: str | None = None) -> str:
  """Downloads torchvision's weights for `arch` (resnet34/vgg19/vgg16 from the Hub, the
  TORCHVISION_URLS ones from download.pytorch.org); returns the path."""
  if arch in TORCHVISION_URLS:
    url = TORCHVISION_URLS[arch]
    directory = cache_dir or os.path.expanduser('~/.cache/torch/hub/checkpoints')
    return _download(url, os.path.join(directory, url.rsplit('/', 1)[1]))
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('--download needs huggingface_hub (pip install huggingface_hub), or '
                      'download the file yourself (docs/WEIGHTS.md) and pass --input.') from e
  return huggingface_hub.hf_hub_download(HUB_REPOS[arch], 'model.safetensors',
                                         cache_dir=cache_dir)


def download_lpips_heads(directory: str, net: str = 'vgg') -> str:
  """Downloads the lpips v0.1 heads of `net` ('vgg' or 'alex': vgg.pth / alex.pth) into
  `directory`; returns the path."""
  return _download(LPIPS_HEADS_URL.format(net=net),
                   os.path.join(directory, f'lpips_v0.1_{net}.pth'))


def _download(url: str, path: str) -> str:
  """`url` -> `path` (atomically; kept if already there); returns the path."""
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    urllib.request.urlretrieve(url, path + '.tmp')
    os.replace(path + '.tmp', path)
  return path


def main(argv):
  del argv
  arch, path, heads = _ARCH.value, _INPUT.value, _LPIPS_HEADS.value
  if arch == weights.BOPBTL_ARCH:
    if not path or _DOWNLOAD.value:
      raise app.UsageError('--arch=bopbtl needs --input=RELEASE_DIR (no --download: get the '
                           "release's global_checkpoints.zip, docs/WEIGHTS.md)")
    try:
      converted = wan_release.convert(path, _OUTPUT.value)
    except ValueError as e:  # a missing file or key: one line, not a traceback
      sys.exit(f'convert_weights: {e}')
    logging.info('Wrote %d networks of the %s release to %s', len(converted), arch,
                 _OUTPUT.value)
    return
  net = weights.LPIPS_NETS.get(arch)
  if _DOWNLOAD.value:
    path = path or download_torchvision(LPIPS_BACKBONES.get(arch, arch), _CACHE_DIR.value)
    if net and not heads:
      heads = download_lpips_heads(_CACHE_DIR.value or os.path.dirname(path), net)
  if not path:
    raise app.UsageError('--input is required (or --download)')
  if net and not heads:
    raise app.UsageError(f'--arch={arch} needs --lpips_heads (lpips weights/v0.1/{net}.pth)')
  variables = weights.convert_files(arch, path, heads)
  weights.save_variables(_OUTPUT.value, variables)
  logging.info('Wrote %s weights to %s (fingerprint %s)', arch, _OUTPUT.value,
               weights.fingerprint(variables))


if __name__ == '__main__':
  flags.mark_flags_as_required(['arch', 'output'])
  app.run(main)
