"""What the studies share: the study protocol and its runner (:mod:`~experiments.common.study`), validated flags
(:mod:`~experiments.common.cli`), run folders with their lock (:mod:`~experiments.common.runs`,
:mod:`~experiments.common.lock`), folder names (:mod:`~experiments.common.naming`), the resumable training loop
(:mod:`~experiments.common.training`), torch.distributed helpers (:mod:`~experiments.common.distributed`), figures
(:mod:`~experiments.common.plots`), data sets (:mod:`~experiments.common.data`), Glow on images (data, models from
flags, model runs, the stability analysis: :mod:`~experiments.common.glow`), trained image flows behind one interface
and the embedded zoo (:mod:`~experiments.common.image_flows`, :mod:`~experiments.common.resflow`) and the 2-D
checkerboard flows (:mod:`~experiments.common.checkerboard`).

Nothing here imports a study; a study imports only from here, from its own package and from ``invertible``.
"""
