"""The local web app (docs/RESTORE.md, "The web app"):

  python -m pikfix_jax.app --workdir=DIR [--workdir=DIR2 ...] [--checkpoint=DIR] \
      [--reference_dir=DIR] [--port=7860] [--host=127.0.0.1 | --share] [--max_upload_mb=50]

Upload an old photo, choose references (uploaded, ranked from --reference_dir, or a palette),
run every loaded model and the tint baseline side by side, download the results. This module is
the program (flags, start, stop); pikfix_jax/app_server.py is the server.
"""

import os
import signal
import sys

from absl import app
from absl import flags

from pikfix_jax import app_server
from pikfix_jax import cli

_WORKDIR = flags.DEFINE_multi_string('workdir', [], 'Training workdir of a model to run '
                                     '(repeatable: every model is run side by side).')
_CHECKPOINT = flags.DEFINE_multi_string('checkpoint', [], 'Exported model (python -m '
                                        'pikfix_jax.export; repeatable).')
_REFERENCE_DIR = flags.DEFINE_string('reference_dir', '', 'Folder of colour photos offered as '
                                     'references, ranked for each photo (paper sec. 3.5).')
_USE_BEST = flags.DEFINE_bool('use_best', False, 'Workdirs: the best checkpoint by validation '
                              'PSNR instead of the latest.')
_PORT = flags.DEFINE_integer('port', 7860, 'Port to listen on (0: any free port).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on; only this machine by '
                            'default.')
_SHARE = flags.DEFINE_bool('share', False, 'Listen on every interface (0.0.0.0): other machines '
                           'of the network can open the page. No tunnel, no login: use it on a '
                           'network you trust.')
_MAX_UPLOAD_MB = flags.DEFINE_float('max_upload_mb', 50.0, 'Largest upload accepted (MB).')
_REFERENCE_SIZE = flags.DEFINE_integer('reference_size', 512, 'Longer side of the resized '
                                       'reference (as restore).')
_TOP_K = flags.DEFINE_integer('top_k', 8, 'Reference thumbnails shown from --reference_dir.')
_INDEX_IMAGE_SIZE = flags.DEFINE_integer('index_image_size', 0, 'Image size of the retrieval '
                                         'index built on the fly (default 224).')


def _stop(*_) -> None:
  """SIGTERM stops like Ctrl-C, so the temporary folder is removed either way."""
  raise KeyboardInterrupt


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup()
  host = '0.0.0.0' if _SHARE.value else _HOST.value
  options = app_server.AppOptions(
      workdirs=tuple(_WORKDIR.value), checkpoints=tuple(_CHECKPOINT.value),
      reference_dir=_REFERENCE_DIR.value, use_best=_USE_BEST.value,
      reference_size=_REFERENCE_SIZE.value, top_k=_TOP_K.value,
      index_image_size=_INDEX_IMAGE_SIZE.value, max_upload_mb=_MAX_UPLOAD_MB.value,
      host=host, port=_PORT.value)
  try:
    state = app_server.App(options)
    server = app_server.serve(state, host, options.port)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  for m in state.methods:
    print(f'  {m.label}' if not m.error else f'  not loaded: {m.error}', file=sys.stderr)
  signal.signal(signal.SIGTERM, _stop)
  address, port = server.server_address[:2]
  print(f'pikfix_jax app: http://{"127.0.0.1" if address == "0.0.0.0" else address}:{port}/'
        + ('  (listening on every interface: --share)' if address == '0.0.0.0' else ''),
        file=sys.stderr, flush=True)
  try:
    server.serve_forever(poll_interval=0.2)
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    state.close()
    print(f'stopped; removed {state.tmp}', file=sys.stderr)
  os._exit(0)  # the JAX worker thread is a daemon; leave without waiting for it


if __name__ == '__main__':
  app.run(main)
