"""Fitted detectors and scoring: the estimator classes, fast scorers, ONNX export, file prediction."""
