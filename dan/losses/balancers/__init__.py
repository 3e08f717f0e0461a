"""Modality loss balancers: one module per strategy, all registered in ``BALANCERS``.

``build_balancer("gradnorm", modalities)`` or ``build_balancer({"name": "ogm_ge", "alpha": 0.5}, mods)``.
"""

from dan.losses.balancers.agm import AGMBalancer
from dan.losses.balancers.base import BALANCERS, FUSED, Balancer, build_balancer, register_balancer
from dan.losses.balancers.context import EpochContext, StepContext
from dan.losses.balancers.gradient_blend import GradientBlendBalancer, blend_weights, multibench_weights
from dan.losses.balancers.gradnorm import GradNormBalancer
from dan.losses.balancers.greedy import GreedyBalancer
from dan.losses.balancers.inforeg import InfoRegBalancer
from dan.losses.balancers.mla import MLABalancer
from dan.losses.balancers.mmcosine import MMCosineBalancer
from dan.losses.balancers.mmpareto import MMParetoBalancer
from dan.losses.balancers.ogm_ge import OGMGEBalancer
from dan.losses.balancers.pmr import PMRBalancer
from dan.losses.balancers.reconboost import ReconBoostBalancer
from dan.losses.balancers.relearning import ReLearningBalancer
from dan.losses.balancers.static import StaticBalancer
from dan.losses.balancers.uncertainty import UncertaintyBalancer
from dan.losses.balancers.unimodal import UMEBalancer, UMTBalancer

__all__ = [
    "AGMBalancer",
    "BALANCERS",
    "FUSED",
    "Balancer",
    "EpochContext",
    "GradNormBalancer",
    "GradientBlendBalancer",
    "GreedyBalancer",
    "InfoRegBalancer",
    "MLABalancer",
    "MMCosineBalancer",
    "MMParetoBalancer",
    "OGMGEBalancer",
    "PMRBalancer",
    "ReLearningBalancer",
    "ReconBoostBalancer",
    "StaticBalancer",
    "StepContext",
    "UMEBalancer",
    "UMTBalancer",
    "UncertaintyBalancer",
    "blend_weights",
    "build_balancer",
    "multibench_weights",
    "register_balancer",
]
