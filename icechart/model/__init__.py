"""The model: the multi-task U-Net (unet.py), checkpoints (checkpoint.py), ensembles
(ensemble.py), the typed contract (contract.py), shipped models (registry.py) and loading with
the one device rule (load.py).

Nothing is imported here, so ``icechart.model.registry`` (the CLI group's ``--version``) and
``icechart.model.contract`` stay free of torch; import the submodules.
"""
