"""The layout's promises, checked: no import cycles; the layers below the trainer import neither
the run nor the trainer; objectives, families, samplers and evaluation import no I/O module; the
CLI's --help; configs by name; config sections derived from the registries give the same
config.json as the hand-written sections did.

tests/assets/configs_before_families/*.json are the full config.json files the shipped configs
produced at commit 0860156 (before the model-family refactor), written by config_to_json_dict.
"""
import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PKG = os.path.join(ROOT, "cmjax")
IO_MODULES = {"cmjax.checkpointing", "cmjax.teacher", "cmjax.run", "cmjax.trainer", "cmjax.cli",
              "cmjax.modes", "cmjax.run_logging", "cmjax.workdir_lock"}


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports() -> dict:
  """{module: {cmjax modules it imports anywhere in its body}} for every module of the package."""
  modules = {}
  for dirpath, _, files in os.walk(PKG):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(dirpath, f)
        modules[_module_name(path)] = path
  graph = {}
  for name, path in modules.items():
    deps = set()
    is_pkg = path.endswith("__init__.py")
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name.startswith("cmjax")}
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
          parts = name.split(".")
          base = ".".join(parts[: len(parts) - node.level + is_pkg] + ([base] if base else []))
        if base.startswith("cmjax"):
          for a in node.names:  # `from cmjax import x` may name a submodule
            deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def _closure(graph, start):
  seen, todo = set(), [start]
  while todo:
    for d in graph.get(todo.pop(), ()):
      if d not in seen:
        seen.add(d)
        todo.append(d)
  return seen


def test_no_import_cycles():
  graph = _imports()
  for name in graph:
    # a package's __init__ importing its own submodules is not a cycle through the package
    cyc = {d for d in _closure(graph, name) if name in _closure(graph, d)
           and not (d.startswith(name + ".") or name.startswith(d + "."))}
    assert not cyc, f"{name} is in an import cycle with {sorted(cyc)}"


@pytest.mark.parametrize("layer", ["cmjax.objectives", "cmjax.families", "cmjax.sampling",
                                   "cmjax.sampler", "cmjax.evaluation", "cmjax.models",
                                   "cmjax.parametrization", "cmjax.builders", "cmjax.train_step"])
def test_lower_layers_import_no_io_module(layer):
  """Objectives, families, samplers, evaluation, networks and the pure builders import neither the
  run, the trainer nor any module that reads or writes run files (directly or indirectly)."""
  graph = _imports()
  for name in [m for m in graph if m == layer or m.startswith(layer + ".")]:
    bad = {d for d in _closure(graph, name) if any(d == io or d.startswith(io + ".") for io in IO_MODULES)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("argv", [["launch.py", "--help"], ["-m", "cmjax.cli", "--help"]])
def test_help_lists_flags_modes_and_configs(argv):
  proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  for word in ("--config", "--workdir", "--mode", "sample", "trajectories", "digits_ect", "toy2d_fm"):
    assert word in proc.stdout


def test_help_into_a_closed_pipe_is_not_an_error(monkeypatch, capfd):
  """`cmjax --help | head -1`: the reader leaves early; exit 0, nothing on stderr."""
  from cmjax.cli import main

  class ClosedPipe:
    def write(self, _):
      raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
      pass

  monkeypatch.setattr(sys, "stdout", ClosedPipe())
  assert main(["cmjax", "--help"]) == 0
  assert "error" not in capfd.readouterr().err


def test_console_script_is_declared():
  text = open(os.path.join(ROOT, "pyproject.toml")).read()
  assert 'cmjax = "cmjax.cli:console_main"' in text


def test_config_by_name_resolves_to_the_packaged_file():
  from cmjax.cli import CONFIG_DIR, resolve_config_arg

  assert resolve_config_arg("digits_ect") == os.path.join(CONFIG_DIR, "digits_ect.py")
  assert resolve_config_arg("digits_ect:smoke") == os.path.join(CONFIG_DIR, "digits_ect.py") + ":smoke"
  assert resolve_config_arg("configs/digits_ect.py:smoke") == "configs/digits_ect.py:smoke"
  assert resolve_config_arg("no_such_config") == "no_such_config"  # config_flags names it


def test_unknown_flag_is_named(capsys):
  import launch

  assert launch.main(["launch.py", "--config", "digits_ect:smoke", "--workdri", "/tmp/x"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["cmjax: error: unknown flag '--workdri' (see --help)"]


# Defaults changed on purpose since the assets were written (each with its evidence).
CHANGED_SINCE = {"digits_ect": {"optim.name": "muon"}}  # docs/digits_ablation.md, 3 seeds


@pytest.mark.parametrize("stem", sorted(f[:-5] for f in os.listdir(
    os.path.join(ROOT, "tests", "assets", "configs_before_families"))))
def test_config_json_unchanged_by_derived_sections(stem):
  """The config a shipped config writes equals the one written before its sections were derived
  from the objectives and networks, except (1) model.* fields the named network does not take
  (the old config.model held every network's fields, at their defaults) and (2) sections of
  objectives added since, at their defaults. Resuming an old run accepts exactly these."""
  import importlib

  from cmjax.config_validation import _default, check_resume_compatible, config_to_json_dict, flatten
  from cmjax.models import model_fields

  smoke = stem.endswith("_smoke")
  name = stem[:-len("_smoke")] if smoke else stem
  old = json.load(open(os.path.join(ROOT, "tests", "assets", "configs_before_families", stem + ".json")))
  config = importlib.import_module(f"cmjax.configs.{name}").get_config("smoke" if smoke else "")
  new = flatten(config_to_json_dict(config))
  for key, value in CHANGED_SINCE.get(stem, {}).items():
    section, field = key.split(".")
    assert new[key] == value != old[section][field], key
    old[section][field] = value
  before = flatten(old)
  takes = set(model_fields(new["model.name"]))
  for key, value in before.items():
    if key.startswith("model.") and key != "model.name" and key[6:] not in takes:
      assert key not in new
    else:
      assert new[key] == value, key
  for key in set(new) - set(before):  # fields added since (a new objective, network or train
    assert new[key] == _default(key, new["model.name"]), key  # argument), at their defaults
  check_resume_compatible(old, config, "W")  # an old run of this config resumes
