"""Emotion vectors from stories: reading residual activations of texts (`reading`),
the stories' labels and held-out split (`stories`), the maths of difference-of-means
and logistic probes and their validation (`fit`), and the probe folder that fits and
saves them at every layer (`vectors`). Knows nothing of SAEs, steering or runs."""
