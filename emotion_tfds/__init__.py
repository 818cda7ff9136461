"""emotion_tfds: facial-emotion recognition on FER-2013 (+ RAVDESS crops) with TFDS and tf.data.

One subpackage per stage of the data flow, from the bottom up; a module imports only its own layer
and the ones below it (tests/layout_test.py checks it). Import the module you need (this file
imports nothing, so `import emotion_tfds.labels` does not pull in TensorFlow):

  shared (top-level modules)
    image_spec, labels          the 48x48x1 uint8 image format; label schemes and mappings
    preprocess, tta             uint8 -> model input and uint8 -> probabilities; test-time views
    errors, quiet               user errors as one line; quiet mains (log levels, C++ lines)
    seeds, workers, faces       seed streams; which task is the chief; face detection, 48x48 crops
    manifest                    a run's commit, versions, CPU, precision (manifest.json)
  ravdess/                      RAVDESS videos -> crops: file_names, video_frames, extract (loop or
                                Beam), crops_folder (the format the ravdess_crops builder reads)
  (builders/ at the repository root: the TFDS builders fer2013, generated_faces, ravdess_crops)
  data/                         facegen (generated faces), datasets (by name, with provenance),
                                integrity (damaged shards named), mixtures, pipeline, augment
  models/                       base_cnn, vgg, fastnet*, heads, weights (Keras-2 import), ensemble,
                                complexity
  report/                       metrics (streaming per-emotion report), evaluation (a network in
                                memory, with TTA), callbacks (TensorBoard), run_summaries, curves
  train/                        config, hparams, stages, schedules, losses, weight_averages,
                                precision, budget, teacher, strategies, checkpoints, inputs,
                                network, training_model, keep_best, profiling, loop (ends at the
                                trained network; never imports serve)
  serve/                        loader (one loader for every model file and ensembles), evaluate
                                (a model file on a split), export (SavedModel, LiteRT), predict
  experiment                    a whole run: train, final evaluation, manifest, saved files; and
                                an ensemble of seeds

The *_main.py files at the repository root are the commands (flags -> one library call).
"""
