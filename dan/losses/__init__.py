"""Losses: modality balancers (``dan.losses.balancers``) and metric losses (``dan.losses.metric``)."""

from dan.losses.balancers import (
    BALANCERS,
    Balancer,
    EpochContext,
    StepContext,
    build_balancer,
    register_balancer,
)

__all__ = ["BALANCERS", "Balancer", "EpochContext", "StepContext", "build_balancer", "register_balancer"]
