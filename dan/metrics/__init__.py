"""Evaluation metrics beyond accuracy: verification (ROC, EER, thresholds) and retrieval."""
