"""doktra-tune: hyperparameter search for DoKTra (Choi et al., ACL 2022)."""

__version__ = "0.1.0"
