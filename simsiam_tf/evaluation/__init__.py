"""Judging an encoder: kNN and collapse monitors, the linear probe's training, baselines, pair verification.

- `monitor`: kNN accuracy, collapse metrics (normalised std, centre/residual), their callbacks.
- `spectrum`: label-free readings of embeddings: centre share, residual correlation, effective rank.
- `spectrum_monitor`: those readings during training, and the dimensional-collapse alarm.
- `probe`: the linear classifier and its training on frozen features.
- `batch_fit`: the largest batch that fits, found by trying.
- `baselines`: raw pixels and random init through the same protocols.
- `verification`: embedding and scoring pairs and N-way trials.
- `pair_metrics`: ROC-AUC, EER, TAR@FAR, accuracy at a threshold.
"""
