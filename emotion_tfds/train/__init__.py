"""Training up to the final network: the run config, stages, schedules, losses, weight averages,
strategies, checkpoints, inputs and the stage loop. Never imports serve."""
