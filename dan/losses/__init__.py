"""Losses: modality balancers (``dan.losses.balancers``) and metric losses (``dan.losses.metric``)."""

from dan.losses.balancers import BALANCERS, Balancer, build_balancer, register_balancer

__all__ = ["BALANCERS", "Balancer", "build_balancer", "register_balancer"]
