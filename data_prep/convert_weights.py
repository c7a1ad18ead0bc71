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
  python -m data_prep.convert_weights --arch=gfpgan --input=GFPGANv1.4.pth \
      --output=weights/gfpgan.msgpack
  python -m data_prep.convert_weights --arch=arcface --input=arcface_resnet18.pth \
      --output=weights/arcface.msgpack
  python -m data_prep.convert_weights --arch=bopbtl --input=Bringing-Old-Photos-Back-to-Life \
      --output=weights/bopbtl

--arch=bopbtl reads the seven stage-1 checkpoints of Wan et al.'s release (the repository
root with Global/checkpoints unzipped, its Global folder or that checkpoints folder) and
writes a folder: one .msgpack per network and config.json (`wan_release.load` reads it).

--download (online machines only) fetches the torchvision weights from the Hugging Face Hub
(timm's '*.tv_in1k' repositories hold torchvision's original weights under the same keys) and
the LPIPS heads from the lpips GitHub repository; deeplabv3_mobilenet_v3_large and lpips_alex's
AlexNet (timm has neither) come from download.pytorch.org (TORCHVISION_URLS), GFP-GAN v1.4
from its GitHub release (GFPGAN_URL). See docs/WEIGHTS.md.

--arch=bopbtl_face converts one checkpoint of Wan et al.'s face-enhancement generator
(docs/WEIGHTS.md, "Wan et al.'s face-enhancement generator"); --output is a .msgpack or a
folder (-> bopbtl_face_256.msgpack), with a .json beside it recording the face size:

  python -m data_prep.convert_weights --arch=bopbtl_face \
      --input=Face_Enhancement/checkpoints/Setting_9_epoch_100/latest_net_G.pth --output=weights/
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
_INPUT = flags.DEFINE_string('input', None, 'torchvision .pth or .safetensors file (gfpgan: the '
                             'released GFPGANv1.3.pth / GFPGANv1.4.pth; bopbtl: the release '
                             'folder).')
_LPIPS_HEADS = flags.DEFINE_string('lpips_heads', None, 'lpips weights/v0.1/vgg.pth (lpips_vgg) '
                                   'or alex.pth (lpips_alex).')
_OUTPUT = flags.DEFINE_string('output', None, 'Converted Flax variables (.msgpack); for '
                              'bopbtl, a folder.')
_DOWNLOAD = flags.DEFINE_bool('download', False, 'Fetch the standard files first (needs network '
                              'and huggingface_hub); --input/--lpips_heads are then optional.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Download cache (default: the hub cache).')
_LOAD_SIZE = flags.DEFINE_integer(
    'load_size', None, 'bopbtl_face only: the face size the checkpoint runs at (256, or 512 '
    'for FaceSR_512); default from its folder name (Setting_9_epoch_100, FaceSR_512).')

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
# GFP-GAN v1.4 (TencentARC/GFPGAN README, "Model zoo"; GFPGANv1.3.pth sits beside it).
GFPGAN_URL = 'https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth'


def download_torchvision(arch: str, cache_dir: str | None = None) -> str:
  """Downloads torchvision's weights for `arch` (resnet34/vgg19/vgg16 from the Hub, the
  TORCHVISION_URLS ones from download.pytorch.org); returns the path."""
  if arch not in TORCHVISION_URLS and arch not in HUB_REPOS:
    raise app.UsageError(f'--download has no source for --arch={arch}: pass --input '
                         '(docs/WEIGHTS.md says where the file comes from)')
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


def convert_face(path: str, output: str, load_size: int | None = None) -> str:
  """--arch=bopbtl_face: one released latest_net_G.pth -> OUTPUT (a .msgpack file, or a folder
  that gets bopbtl_face_<size>.msgpack) and the .json beside it recording the face size;
  returns the .msgpack path."""
  load_size = load_size or weights.face_load_size(path)
  if load_size is None:
    raise app.UsageError(f'{path}: cannot tell the face size from its folder name (expected '
                         'Setting_9_epoch_100 or FaceSR_512): pass --load_size=256 or 512')
  if not output.endswith('.msgpack'):
    output = os.path.join(output, f'{weights.FACE_ARCH}_{load_size}.msgpack')
  variables = weights.convert_files(weights.FACE_ARCH, path)
  weights.save_face_generator(output, variables, load_size, source=path)
  logging.info('Wrote %s (%d x %d faces) weights to %s (fingerprint %s)', weights.FACE_ARCH,
               load_size, load_size, output, weights.fingerprint(variables))
  return output


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
  if _DOWNLOAD.value and arch == 'gfpgan':
    directory = _CACHE_DIR.value or os.path.expanduser('~/.cache/gfpgan')
    path = path or _download(GFPGAN_URL, os.path.join(directory, GFPGAN_URL.rsplit('/', 1)[1]))
  elif _DOWNLOAD.value:
    path = path or download_torchvision(LPIPS_BACKBONES.get(arch, arch), _CACHE_DIR.value)
    if net and not heads:
      heads = download_lpips_heads(_CACHE_DIR.value or os.path.dirname(path), net)
  if not path:
    raise app.UsageError('--input is required (or --download)')
  if arch == weights.FACE_ARCH:
    convert_face(path, _OUTPUT.value, _LOAD_SIZE.value)
    return
  if net and not heads:
    raise app.UsageError(f'--arch={arch} needs --lpips_heads (lpips weights/v0.1/{net}.pth)')
  variables = weights.convert_files(arch, path, heads)
  if arch == 'gfpgan':  # the config is read off the shapes again when loading (load_gfpgan)
    config = weights.gfpgan_config(weights.gfpgan_torch_shapes(variables))
    logging.info('GFP-GAN config: %s', config)
  weights.save_variables(_OUTPUT.value, variables)
  logging.info('Wrote %s weights to %s (fingerprint %s)', arch, _OUTPUT.value,
               weights.fingerprint(variables))


if __name__ == '__main__':
  flags.mark_flags_as_required(['arch', 'output'])
  app.run(main)
