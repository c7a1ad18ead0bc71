"""tf.data input pipelines and degradations."""
