"""Glow on images, shared by the studies that train or load Glows (``glow``, ``flowgan``, ``ood``, ``attack``): the
data in ``[-0.5, 0.5)`` and the probe sets (:mod:`.data`), the flags (:mod:`.options`), the model from flags and the
model runs and snapshots of finished folders (:mod:`.model`), the training parts (:mod:`.training`) and the
stability analysis of every snapshot (:mod:`.analysis`)."""
