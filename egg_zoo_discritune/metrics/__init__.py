"""Evaluation metrics: retrieval (P@1, recall@k) and caption quality (pycocoevalcap)."""
