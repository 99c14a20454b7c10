"""Models built from the layers: Glow, a dense coupling flow for flat data, the ``Flow`` base, and the INN
classifier."""

from .classifier import INNClassifier, classifier_flow
from .dense import DenseFlow
from .flow import Flow, bits_per_dim, standard_normal_log_prob
from .glow import PERMUTATIONS, Glow, flow_step
from .resflow import RESFLOW_CIFAR10, DenseResidualFlow, ResidualFlow, resflow_estimator

__all__ = ["PERMUTATIONS", "DenseFlow", "Flow", "Glow", "bits_per_dim", "flow_step", "standard_normal_log_prob",
           "RESFLOW_CIFAR10", "DenseResidualFlow", "ResidualFlow", "resflow_estimator", "INNClassifier",
           "classifier_flow"]
