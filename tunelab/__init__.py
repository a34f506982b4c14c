"""tunelab: turn a general pretrained language model into a specialist from your own data, and prove it worked."""

__version__ = "0.1.0"
