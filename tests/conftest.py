"""Test setup: runs before any test module imports JAX.

Four fake CPU devices let every test exercise the data-parallel code path on
a laptop or CI machine; TensorFlow must not grab a GPU that JAX wants.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['CUDA_VISIBLE_DEVICES'] = os.environ.get('VI_GEN_TEST_GPUS', '')

import jax  # noqa: E402

NUM_TEST_DEVICES = 4

jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_num_cpu_devices', NUM_TEST_DEVICES)
