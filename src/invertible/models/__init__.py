"""Models built from the layers: Glow, a dense coupling flow for flat data, the ``Flow`` base, the INN
classifier, the residual flows, and ``FlowStep``, the flow step the coupling models repeat."""

from .step import COUPLINGS, PERMUTATIONS, FlowStep, flow_step
from .classifier import CLASSIFIER_STEP, INNClassifier, classifier_flow
from .dense import DENSE_STEP, DenseFlow
from .flow import Flow, bits_per_dim, standard_normal_log_prob
from .glow import Glow
from .resflow import RESFLOW_CIFAR10, DenseResidualFlow, ResidualFlow, resflow_estimator

__all__ = ["CLASSIFIER_STEP", "COUPLINGS", "DENSE_STEP", "PERMUTATIONS", "DenseFlow", "Flow", "FlowStep", "Glow",
           "bits_per_dim", "flow_step", "standard_normal_log_prob", "RESFLOW_CIFAR10", "DenseResidualFlow",
           "ResidualFlow", "resflow_estimator", "INNClassifier", "classifier_flow"]
