"""Import this (``custom_imports``) to register the suite's modules in mmseg's registries."""
from . import convnext, hooks, linear_head, metric, resnet_nano  # noqa: F401
