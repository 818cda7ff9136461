"""Generated faces dataset; importing this package registers `generated_faces` with TFDS."""

from builders.generated_faces.generated_faces_dataset_builder import Builder

__all__ = ["Builder"]
