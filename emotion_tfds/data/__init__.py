"""Datasets by name (real or generated), input-time mixtures, the tf.data pipeline and the batched
seeded augmentation."""
