"""The local web app (docs/RESTORE.md, "The web app"):

  python -m pikfix_jax.app --workdir=DIR [--workdir=DIR2 ...] [--checkpoint=DIR] \
      [--reference_dir=DIR] [--port=7860] [--host=127.0.0.1 | --share] [--max_upload_mb=50] \
      [--with_scratch] [--faces={wan,gfpgan} --face_checkpoint=PATH]

Upload an old photo, choose references (uploaded, ranked from --reference_dir, or a palette),
run every loaded model and the tint baseline side by side (faces restored after each when the
page's Faces toggle is on), download the results. This module is
the program (flags, start, stop); pikfix_jax/app_server.py is the server.
"""

import os
import signal
import sys

from absl import app
from absl import flags

from pikfix_jax import app_server
from pikfix_jax import cli
from pikfix_jax import faces


def define_flags() -> None:
  """The flags; only when run as a program (main.py and others define --workdir too)."""
  flags.DEFINE_multi_string('workdir', [], 'Training workdir of a model to run (repeatable: '
                            'every model is run side by side).')
  flags.DEFINE_multi_string('checkpoint', [], 'Exported model (python -m pikfix_jax.export; '
                            'repeatable).')
  flags.DEFINE_string('reference_dir', '', 'Folder of colour photos offered as references, '
                      'ranked for each photo (paper sec. 3.5).')
  flags.DEFINE_bool('use_best', False, 'Workdirs: the best checkpoint by validation PSNR '
                    'instead of the latest.')
  flags.DEFINE_integer('port', 7860, 'Port to listen on (0: any free port).')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on; only this machine by '
                      'default.')
  flags.DEFINE_bool('share', False, 'Listen on every interface (0.0.0.0): other machines of '
                    'the network can open the page. No tunnel, no login: a trusted network only.')
  flags.DEFINE_float('max_upload_mb', 50.0, 'Largest upload accepted (MB).')
  flags.DEFINE_integer('reference_size', 512, 'Longer side of the resized reference (as '
                       'restore).')
  flags.DEFINE_integer('top_k', 8, 'Reference thumbnails shown from --reference_dir.')
  flags.DEFINE_integer('index_image_size', 0, 'Image size of the retrieval index built on '
                       'the fly (default 224).')
  flags.DEFINE_bool('with_scratch', False, 'A --checkpoint of a converted Wan et al. release '
                    '(convert_weights --arch=bopbtl) detects and inpaints scratches (the '
                    'release\'s --with_scratch; the page shows the mask and lets you paint it); '
                    'without: its quality restoration.')
  flags.DEFINE_enum('faces', '', ['', *faces.KINDS], 'A face network for the page\'s Faces '
                    'toggle, run after each method as restore --faces: wan (Wan et al.\'s '
                    'pipeline) or gfpgan (GFP-GAN\'s). Needs pip install -e .[faces].')
  flags.DEFINE_string('face_checkpoint', '', 'With --faces: the face network\'s converted '
                      'weights (as restore --face_checkpoint).')


def _stop(*_) -> None:
  """SIGTERM stops like Ctrl-C, so the temporary folder is removed either way."""
  raise KeyboardInterrupt


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup()
  f = flags.FLAGS
  host = '0.0.0.0' if f.share else f.host
  options = app_server.AppOptions(
      workdirs=tuple(f.workdir), checkpoints=tuple(f.checkpoint),
      reference_dir=f.reference_dir, use_best=f.use_best,
      reference_size=f.reference_size, top_k=f.top_k,
      index_image_size=f.index_image_size, max_upload_mb=f.max_upload_mb,
      host=host, port=f.port, with_scratch=f.with_scratch, faces=f.faces,
      face_checkpoint=f.face_checkpoint)
  try:
    state = app_server.App(options)
    server = app_server.serve(state, host, options.port)
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  for m in state.methods:
    print(f'  {m.label}' if not m.error else f'  not loaded: {m.error}', file=sys.stderr)
  if state.face_enhancer is not None:
    print(f'  faces: {app_server.FACE_LABELS[state.face_enhancer.kind]} '
          f'({options.face_checkpoint}), the page\'s Faces toggle', file=sys.stderr)
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
    # A second Ctrl-C (or TERM) while the temporary folder is being removed must not leave
    # half of it behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server.server_close()
    state.close()
    print(f'stopped; removed {state.tmp}', file=sys.stderr)
  os._exit(0)  # the JAX worker thread is a daemon; leave without waiting for it


if __name__ == '__main__':
  define_flags()
  app.run(main)
