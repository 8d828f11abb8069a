"""Applications: complete workflows built from the library, the only layer (with ``course``,
``browse``, ``explain``, ``cli`` and ``viz`` itself) that draws figures with :mod:`ikd_edu.viz`.

* :mod:`ikd_edu.apps.quickstart` - ``ikd-edu quickstart``: synthetic data -> teacher ->
  students -> AP table and figures;
* :mod:`ikd_edu.apps.ablation` - ``ikd-edu ablation``: every distillation variant over seeds,
  the verdict rule and the report.
"""
