"""Trained models in use: one loader for every model file, evaluation of a file, export (SavedModel,
LiteRT) and prediction on photos."""
