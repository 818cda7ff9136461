"""RAVDESS videos -> 48x48 face crops: file names, video frames, extraction (loop or Beam), and the
crops folder the `ravdess_crops` TFDS builder reads."""
