"""Training: data windows streamed through tf.data, declared features, model builders, the train loop."""
