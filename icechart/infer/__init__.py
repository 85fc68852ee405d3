"""Inference: from a scene and a model to the charts at the model's and the SAR resolution.

Modules: :mod:`~icechart.infer.tiling` (numpy-only overlapping tiles), :mod:`~icechart.infer.forward`
(features, tiled forward pass, flips, ensemble averaging), :mod:`~icechart.infer.decide` (the one
decision rule: upsample and decide, status flags; also used by validation),
:mod:`~icechart.infer.predict` (``predict_scene`` -> ``Prediction``), :mod:`~icechart.infer.calibrate`
(fitting calibration temperatures). torch is imported only when a model is run.
"""
