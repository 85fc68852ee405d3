"""Pipelines: the library calls behind the commands (:mod:`~icechart.pipeline.predict`:
``predict``, ``process_scene``, ``predict_batch``; :mod:`~icechart.pipeline.score`: scoring,
its table, CSV and plots). The layer above the products and below the CLI: a Python user gets
what a command does, cron-safe batch included, without Click."""
