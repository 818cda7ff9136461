"""FER-2013 dataset; importing this package registers `fer2013` with TFDS."""

from builders.fer2013.fer2013_dataset_builder import Builder
from builders.fer2013.fer2013_dataset_builder import CsvError

__all__ = ["Builder", "CsvError"]
