"""The metrics the field reports, computed offline.

  from vi_gen import inference
  results = inference.evaluate(config, workdir)   # the latest checkpoint
  from vi_gen.evaluation import run
  evaluator = run.Evaluator(config, workdir, method)  # once, then per step:
  results = evaluator(state, step)

Modules: `run` (which metrics apply, recipes, eval_<step>.json), `metrics`
(FID, KID, IS, RBF-MMD on features), `inception` (the FID Inception-v3 in
Flax), `convert_inception` (pytorch-fid / jax-fid weights -> .npz),
`mnist_classifier` (the MNIST-FID network), `likelihood` (IWAE bound),
`modes` (2-D mode coverage). This file imports none of them, so that
`python -m vi_gen.evaluation.<module>` runs each command-line entry once.
"""
