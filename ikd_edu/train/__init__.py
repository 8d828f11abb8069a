"""Training: configuration, the one training loop, multi-process support, CLI commands.

* :mod:`ikd_edu.train.config` - dataclass configs with commented defaults, YAML presets
  (``quick``, ``coco-r50-256x192``, ``mpii-r50-256x256``), ``--set key=value`` overrides;
* :mod:`ikd_edu.train.engine` - :func:`~ikd_edu.train.engine.train` (teachers and students
  with any distillation terms, AMP, checkpoints, exact resume, evaluation) and
  :func:`~ikd_edu.train.engine.evaluate_checkpoint`;
* :mod:`ikd_edu.train.distributed` - ``torchrun`` support on the same code path;
* :mod:`ikd_edu.train.commands` - ``ikd-edu train teacher|student`` (``ikd-edu ablation`` and
  ``ikd-edu quickstart`` are applications: :mod:`ikd_edu.apps`).

Typical use::

    from ikd_edu.train.config import load_config
    from ikd_edu.train.engine import train
    summary = train(load_config("quick", role="teacher"))
"""
