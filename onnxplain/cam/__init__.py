"""Class activation maps: the gradient CAMs and Eigen-CAM as explainer graphs (:mod:`.methods`, with the map
arithmetic in :mod:`.maps` and the power iteration in :mod:`.eigen`), Score-CAM and Ablation-CAM as batched
methods run from Python (:mod:`.perturbation`, with the layer head/tail models in :mod:`.split`)."""
