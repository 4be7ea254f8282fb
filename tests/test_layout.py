"""The layout of DESIGN.md §7 holds: imports point one way, modules and functions stay small,
and importing media I/O does not load jax."""
import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p for root in ("pcavs_jax", "data_pipeline") for p in (REPO / root).rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# What each part of the package may import of ours (besides itself). `checkpoint` is the one
# module through which training, inference and evaluation read checkpoints.
ALLOWED = {
    "models": set(),
    "data": set(),
    "convert": {"models"},
    "checkpoint": {"models", "convert"},
    "train": {"models", "data", "convert", "checkpoint"},
    "infer": {"models", "data", "convert", "checkpoint"},
    "evaluate": {"models", "data", "convert", "checkpoint", "infer"},
    "cli": {"models", "data", "convert", "checkpoint", "train", "infer", "evaluate",
            "data_pipeline"},
    "data_pipeline": {"models", "data", "evaluate"},
    "package": {"checkpoint"},   # pcavs_jax/__init__.py, lazily
}


def _part(module: str) -> str | None:
  parts = module.split(".")
  if parts[0] == "data_pipeline":
    return "data_pipeline"
  if parts[0] != "pcavs_jax":
    return None
  return parts[1] if len(parts) > 1 else "package"


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(REPO).with_suffix("")
  parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
  return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Every module of ours that `path` imports, at the top or inside a function."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module)
      out |= {f"{node.module}.{a.name}" for a in node.names}
  return {m for m in out if _part(m) and _part(m) in ALLOWED}


def test_imports_point_one_way():
  wrong = []
  for path in SOURCES:
    part = _part(_module_name(path))
    for target in _imports(path):
      other = _part(target)
      if other != part and other not in ALLOWED[part]:
        wrong.append(f"{path.relative_to(REPO)} ({part}) imports {target} ({other})")
  assert not wrong, "\n".join(wrong)


def test_train_and_infer_never_reach_each_other():
  graph = {_module_name(p): _imports(p) for p in SOURCES}

  def reach(start: str) -> set[str]:
    seen, todo = set(), [m for m in graph if _part(m) == start]
    while todo:
      m = todo.pop()
      for t in graph.get(m, ()):
        if t in graph and t not in seen:
          seen.add(t)
          todo.append(t)
    return {_part(m) for m in seen}

  assert "infer" not in reach("train")
  assert "train" not in reach("infer")


def test_modules_and_functions_are_small():
  big = []
  for path in SOURCES:
    source = path.read_text()
    if len(source.splitlines()) > MAX_MODULE_LINES:
      big.append(f"{path.relative_to(REPO)}: {len(source.splitlines())} lines")
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        n = node.end_lineno - node.lineno + 1
        if n > MAX_FUNCTION_LINES:
          big.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
  assert not big, "\n".join(big)


@pytest.mark.parametrize("module", ["pcavs_jax.data.media", "pcavs_jax.data.audio",
                                    "pcavs_jax.data.records"])
def test_media_workers_do_not_load_jax(module):
  code = f"import sys, {module}; print(sorted(m for m in ('jax', 'flax', 'optax', 'tensorflow') if m in sys.modules))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=REPO)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr
