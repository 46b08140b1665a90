"""The only layer that imports torch/diffusers. Keep this __init__ import-free so
importing ``sdserve.engine.base`` or ``sdserve.engine.catalog`` stays torch-free."""
