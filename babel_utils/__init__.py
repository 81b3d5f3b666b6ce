"""babel_utils: the thin helper package behind the babel notebooks."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
