"""TFDS dataset builders of emotion_tfds; importing `builders.<name>` registers that dataset."""
