"""The installs the README gives: running needs no test tool, the test set
holds them all, and CI also installs the declared ranges alone."""

import configparser
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def name(requirement: str) -> str:
  """'scikit-learn>=1.9,<2' -> 'scikit-learn' (normalised as pip does)."""
  return (
    re.split(r'[<>=!~ ;\[]', requirement.strip(), maxsplit=1)[0]
    .lower()
    .replace('_', '-')
  )


def pins(path: str) -> set[str]:
  with open(os.path.join(REPO, path)) as f:
    return {
      name(line)
      for line in f
      if line.strip() and not line.startswith(('#', '-r'))
    }


def declared() -> tuple[set[str], set[str]]:
  setup = configparser.ConfigParser()
  setup.read(os.path.join(REPO, 'setup.cfg'))
  runtime = setup['options']['install_requires'].split()
  test = setup['options.extras_require']['test'].split()
  return {name(r) for r in runtime if r}, {name(r) for r in test if r}


def test_the_runtime_lock_pins_what_running_needs_and_no_test_tool():
  runtime, test = declared()
  lock = pins('requirements.lock')
  assert runtime <= lock
  assert not test & lock, test & lock  # pytest, ruff, chex, scikit-learn.


def test_the_test_lock_adds_the_test_tools_to_the_runtime_lock():
  with open(os.path.join(REPO, 'requirements-test.lock')) as f:
    assert '-r requirements.lock\n' in f.read()
  _, test = declared()
  assert test <= pins('requirements-test.lock')
  assert not pins('requirements-test.lock') & pins('requirements.lock')


def test_readme_and_ci_install_what_they_need():
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  assert 'pip install -r requirements.lock -e . &&' in readme
  assert "pip install -r requirements-test.lock -e '.[test]' &&" in readme
  with open(os.path.join(REPO, '.ci', 'run')) as f:
    ci = f.read()
  assert "pip install --quiet -r requirements-test.lock -e '.[test]'" in ci
  # The declared ranges alone, then the test presets train.
  assert '\npip install --quiet -e .\n' in ci
  assert 'configs/$model.py:test' in ci
