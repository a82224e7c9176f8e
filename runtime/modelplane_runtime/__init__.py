"""modelplane Torch runtime: serves torch.export programs over the Open Inference Protocol v2."""

__version__ = "0.1.0"
