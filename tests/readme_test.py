"""What the README says about the code stays true of it."""

import os
import re

from configs import gan as gan_config
from vi_gen import data, losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme() -> str:
  with open(os.path.join(REPO, 'README.md')) as f:
    return f.read()


def test_the_layout_names_every_module_of_the_package():
  layout = readme().split('## Layout', 1)[1].split('\n## ', 1)[0]
  package = os.path.join(REPO, 'vi_gen')
  for name in sorted(os.listdir(package)):
    if name == '__init__.py' or name.startswith(('.', '__')):
      continue
    if name.endswith('.py'):
      assert f'  {name} ' in layout, name
    elif os.path.isdir(os.path.join(package, name)):
      assert f'  {name}/ ' in layout, name


def test_the_celeba_steps_agree_with_the_error_message():
  config = gan_config.get_config()
  message = data._celeba_missing_message(config)
  steps = re.findall(r'^  (\d)\. ', message, re.MULTILINE)
  assert steps == ['1', '2', '3']
  text = readme().split('* **CelebA**', 1)[1].split('\n\n', 1)[0]
  text = ' '.join(text.split())
  for part in (
    'downloads/manual/',
    'download_and_prepare()',
    'tfds build celeb_a',
    'apache-beam',
    'the same command again',
  ):
    assert part in message and part in text, part
  assert 'configs/gan.py:mnist' in message and 'MNIST' in text


def test_the_losses_module_points_at_a_section_that_exists():
  (section,) = re.findall(r"README's\s+(\w+)", losses.__doc__)
  assert f'\n## {section}\n' in readme()


def test_the_celeba_preset_resizes_with_the_reference_tf1_kernel():
  assert gan_config.get_config().data.resize == 'bicubic_tf1'
  assert gan_config.get_config('celeba').data.resize == 'bicubic_tf1'
  assert "TF1's bicubic kernel (`data.resize='bicubic_tf1'`, the default" in (
    ' '.join(readme().split())
  )
