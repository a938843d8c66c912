"""Model registry and the DCASE (ResNet-17, FCNN, fsFCNN) and CIFAR models."""

from asc.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
