"""maskstudy's orchestration package: protocols, runs, training, store and schedulers."""

__version__ = "0.1.0"
