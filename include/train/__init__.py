"""Training: a run's data window, its tf.data input, declared features, model builders, the train loop."""
