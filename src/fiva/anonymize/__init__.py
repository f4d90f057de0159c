"""Anonymization: identity tracking, anchor sampling, frames, video."""
