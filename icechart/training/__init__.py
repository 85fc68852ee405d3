"""Training: configuration, preprocessing cache and patch sampling, augmentation, loss,
validation and the loop (see :mod:`icechart.train` for the entry points)."""
