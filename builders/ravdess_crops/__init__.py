"""RAVDESS face crops dataset; importing this package registers `ravdess_crops` with TFDS."""

from builders.ravdess_crops.ravdess_crops_dataset_builder import Builder

__all__ = ["Builder"]
