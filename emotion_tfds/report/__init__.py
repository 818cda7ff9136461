"""What a run reports: streaming per-emotion metrics, evaluation of a network (with TTA), the
TensorBoard callbacks and run summaries, curves read back. Imports neither train nor serve."""
