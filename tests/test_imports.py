"""Importing the project does no work: no JAX backend, no tracing or compiling, no TensorFlow
device, so a tool's main() can still set XLA's flags, start jax.distributed and hide
accelerators from TensorFlow (cli.setup) after its module-level imports. The package's imports
form no circle, and no module imports a program (a command-line tool) as a library."""

import ast
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh interpreter (this one has compiled already).
_CODE = '''
import importlib, json, pkgutil
from absl import flags
import jax
from jax._src import xla_bridge
events = []
jax.monitoring.register_event_listener(lambda event, **_: events.append(event))
jax.monitoring.register_event_duration_secs_listener(lambda event, _, **__: events.append(event))
modules = []
for package in ('pikfix_jax', 'data_prep', 'configs'):
  path = importlib.import_module(package).__path__
  modules += [package] + [m.name for m in pkgutil.walk_packages(path, package + '.')]
for name in modules:
  defined = set(flags.FLAGS)
  importlib.import_module(name)
  # The tools that define their flags at import (main, benchmark, ...) share names (--config).
  for flag in set(flags.FLAGS) - defined:
    delattr(flags.FLAGS, flag)
backends_after_import = xla_bridge.backends_are_initialized()
from pikfix_jax import cli
cli.setup(compilation_cache=False)  # raises if TensorFlow has initialised its devices
print(json.dumps({'modules': modules, 'events': events,
                  'backends_after_import': backends_after_import,
                  'backends_after_setup': xla_bridge.backends_are_initialized()}))
'''


def test_importing_every_module_starts_no_backend_and_compiles_nothing():
  result = subprocess.run([sys.executable, '-c', _CODE], cwd=REPO, capture_output=True,
                          text=True, check=True)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert {'pikfix_jax.train', 'pikfix_jax.ops.color', 'pikfix_jax.xla_cpu', 'pikfix_jax.main',
          'pikfix_jax.benchmark', 'data_prep.convert_weights',
          'configs.default'} <= set(report['modules'])
  assert not report['backends_after_import']
  assert not report['backends_after_setup']
  # JAX reports tracing, lowering and compiling as '/jax/core/compile/...' events (and cache
  # use as '/jax/compilation_cache/...'); orbax's handler registration is no computation.
  assert [e for e in report['events'] if e.startswith(('/jax/core', '/jax/compilation'))] == []


def import_graph(package_dirs: dict[str, str]) -> dict[str, set[str]]:
  """{module: the package's modules it imports}, from every import statement of every file
  (function-level ones included). Importing a.b.c also runs a's and a.b's __init__."""
  modules = {}
  for package, directory in package_dirs.items():
    for root, _, files in os.walk(directory):
      for name in files:
        if name.endswith('.py'):
          rel = os.path.relpath(os.path.join(root, name), directory)[:-3].split(os.sep)
          if rel[-1] == '__init__':
            rel = rel[:-1]
          modules['.'.join([package] + rel)] = os.path.join(root, name)

  def closest(name: str) -> set[str]:
    parts = name.split('.')
    found = {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)} & set(modules)
    return found

  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          edges |= closest(alias.name)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        edges |= closest(node.module)
        for alias in node.names:
          edges |= closest(f'{node.module}.{alias.name}')
    graph[module] = edges - {module}
  return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), sorted."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(cycles)


def test_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
  package = tmp_path / 'pkg'
  (package / 'sub').mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'sub' / '__init__.py').write_text('')
  (package / 'a.py').write_text('from pkg.sub import b\n')
  (package / 'sub' / 'b.py').write_text('def f():\n  from pkg import c\n')
  (package / 'c.py').write_text('import pkg.a\n')
  (package / 'd.py').write_text('from pkg import a\n')
  graph = import_graph({'pkg': str(package)})
  assert graph['pkg.a'] == {'pkg', 'pkg.sub', 'pkg.sub.b'}
  assert import_cycles(graph) == [['pkg.a', 'pkg.c', 'pkg.sub.b']]


def test_the_package_imports_form_no_circle():
  dirs = {p: os.path.join(REPO, p) for p in ('pikfix_jax', 'data_prep', 'configs')}
  graph = import_graph(dirs)
  assert {'pikfix_jax.methods.base', 'pikfix_jax.inference'} <= set(graph)
  assert 'pikfix_jax.inference' in graph['pikfix_jax.methods.base']
  assert import_cycles(graph) == []


def program_modules(package_dirs: dict[str, str]) -> set[str]:
  """The programs among the modules: those whose `if __name__ == '__main__':` block calls
  absl's `app.run` (main, restore, evaluate, export, benchmark, model_summary, app, the data_prep
  tools, ...)."""
  programs = set()
  for package, directory in package_dirs.items():
    for root, _, files in os.walk(directory):
      for name in files:
        if not name.endswith('.py'):
          continue
        path = os.path.join(root, name)
        with open(path) as f:
          tree = ast.parse(f.read())
        for node in tree.body:
          if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
              isinstance(node.test.left, ast.Name) and node.test.left.id == '__name__' and
              any(isinstance(c, ast.Constant) and c.value == '__main__'
                  for c in node.test.comparators) and
              any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and
                  n.func.attr == 'run' and isinstance(n.func.value, ast.Name) and
                  n.func.value.id == 'app' for n in ast.walk(node))):
            rel = os.path.relpath(path, directory)[:-3].split(os.sep)
            programs.add('.'.join([package] + rel))
  return programs


def program_imports(graph: dict[str, set[str]], programs: set[str]) -> list[tuple[str, str]]:
  """(importer, program) for every module that imports a program, sorted."""
  return sorted((module, p) for module, edges in graph.items() for p in edges & programs)


def test_program_finder_finds_a_program_imported_as_a_library(tmp_path):
  package = tmp_path / 'pkg'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'tool.py').write_text(
      'from absl import app\ndef main(argv):\n  pass\nif __name__ == "__main__":\n'
      '  app.run(main)\n')
  (package / 'lib.py').write_text('def f():\n  return 1\n')
  (package / 'user.py').write_text('def g():\n  from pkg import tool\n')  # function level
  (package / 'other_tool.py').write_text(
      'from absl import app\nfrom pkg import lib\nif __name__ == "__main__":\n'
      '  app.run(lambda argv: lib.f())\n')
  dirs = {'pkg': str(package)}
  programs = program_modules(dirs)
  assert programs == {'pkg.tool', 'pkg.other_tool'}
  assert program_imports(import_graph(dirs), programs) == [('pkg.user', 'pkg.tool')]


def test_no_module_imports_a_program():
  dirs = {p: os.path.join(REPO, p) for p in ('pikfix_jax', 'data_prep', 'configs')}
  programs = program_modules(dirs)
  assert {'pikfix_jax.main', 'pikfix_jax.restore', 'pikfix_jax.evaluate', 'pikfix_jax.export',
          'pikfix_jax.benchmark', 'pikfix_jax.model_summary', 'pikfix_jax.app',
          'data_prep.convert_weights'} <= programs
  assert not programs & {'pikfix_jax.restoring', 'pikfix_jax.app_server', 'pikfix_jax.cli'}
  assert program_imports(import_graph(dirs), programs) == []
