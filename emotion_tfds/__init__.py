"""emotion_tfds: facial-emotion recognition on FER-2013 (+ RAVDESS crops) with TFDS and tf.data.

The modules follow the data flow; import the one you need (this file imports nothing, so
`import emotion_tfds.labels` does not pull in TensorFlow):

    image_spec                  the 48x48x1 uint8 image format every module shares
    labels, preprocess          label schemes and mappings; uint8 -> model input
    facegen, faces              generated faces; face detection and 48x48 crops (OpenCV)
    ravdess_names               RAVDESS file names -> fields and emotion labels; which are videos
    video_frames                a video's evenly spaced frames, their largest face (OpenCV)
    ravdess                     RAVDESS videos -> face crops + summary (plain loop or Beam), command
    ravdess_crops               the crops folder (manifest.csv + PNGs): ravdess -> its builder
    datasets, mixtures          the TFDS builders (builders/) by name, their provenance; FER + crops
                                at input time
    manifest                    a run's manifest: commit, versions, CPU (+ settings, precision, data)
    pipeline, augment           tf.data input; batched augmentation (host or device)
    models                      networks (base_cnn, vgg, fastnet), head swap, weights, complexity
    stages, schedules, losses   the stage spec and its options; lr schedules; smoothed/weighted loss
    budget                      --time_budget: the budgeted stage's epochs from its measured speed
    weight_averages             a stage's EMA of the weights: evaluated, kept, resumed, final
    strategies, seeds           tf.distribute strategies by name, chief; the run's seed streams
    stage_inputs, checkpoints   a run's datasets and per-stage input fns; checkpoint state, resume
    training                    the stages under tf.distribute, resume, best epoch -> network
    runs                        a whole run: training, final evaluation (TTA), saved files
    metrics, callbacks          per-emotion report; per-epoch TensorBoard summaries
    run_summaries, curves       the run's HParams trial and chart layout; curves read back
    serving                     one loader (.keras, SavedModel, .tflite): uint8 faces -> probabilities
    evaluate, export, predict   eval_main, export_main (SavedModel, TFLite), predict_main
"""
