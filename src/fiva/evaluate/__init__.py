"""Evaluation with models the generator was not trained against (dlib, YuNet landmarks)."""
