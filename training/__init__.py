"""fer-service training: datasets, networks, trainers, evaluation and export to `.mar`."""
