"""Model architectures by name, the head swap and pretrained-weight loading.

    from emotion_tfds import models
    model = models.MODELS["vgg"](num_classes=7)
"""

from emotion_tfds.models.base_cnn import build_base_cnn
from emotion_tfds.models.fastnet import build_fastnet
from emotion_tfds.models.fastnet import build_fastnet_mid
from emotion_tfds.models.fastnet import build_fastnet_small
from emotion_tfds.models.fastnet import build_fastnet_wide
from emotion_tfds.models.heads import base_layers
from emotion_tfds.models.heads import head_layers
from emotion_tfds.models.heads import replace_head
from emotion_tfds.models.vgg import build_vgg
from emotion_tfds.models.weights import load_pretrained

MODELS = {"base_cnn": build_base_cnn, "vgg": build_vgg, "fastnet": build_fastnet,
          "fastnet_mid": build_fastnet_mid, "fastnet_small": build_fastnet_small,
          "fastnet_wide": build_fastnet_wide}

__all__ = ["MODELS", "build_base_cnn", "build_vgg", "build_fastnet", "build_fastnet_mid",
           "build_fastnet_small", "build_fastnet_wide", "replace_head", "base_layers", "head_layers",
           "load_pretrained"]
