"""mt: machine translation with an LSTM encoder-decoder."""

__version__ = "0.1.0"
