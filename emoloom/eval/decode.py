"""The old home of the decoders, kept so `emoloom.eval.decode` imports keep working; the code
lives in the `emoloom.eval.decoding` package, one module per concept."""
from .decoding import *  # noqa: F401,F403
from .decoding import __all__  # noqa: F401
