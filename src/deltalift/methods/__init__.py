"""Attribution methods, one small class each, with Captum's interface."""

from deltalift.methods.deeplift import DeepLift

__all__ = ["DeepLift"]
