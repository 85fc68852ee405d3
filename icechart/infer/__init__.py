"""Inference: tiled forward pass, full-resolution charts by row blocks, per-scene processing.

Modules: :mod:`~icechart.infer.tiling` (numpy-only overlapping tiles), :mod:`~icechart.infer.predict`
(``predict_scene``, ``predict_dataset``, ``load_model``), :mod:`~icechart.infer.run`
(``process_scene``: one scene to products and manifest). torch is imported only when a model is
loaded or run.
"""
