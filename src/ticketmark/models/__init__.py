"""Model registry: the LTH paper's small nets, CIFAR ResNets and VGG, sized to the data."""

from ticketmark.models.registry import MODELS, build_model, default_lr

__all__ = ["MODELS", "build_model", "default_lr"]
