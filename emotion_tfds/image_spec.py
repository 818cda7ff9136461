"""The FER-2013 image format all modules share: 48x48, one channel, uint8."""

from __future__ import annotations

IMAGE_SIZE: int = 48
IMAGE_SHAPE: tuple[int, int, int] = (IMAGE_SIZE, IMAGE_SIZE, 1)
