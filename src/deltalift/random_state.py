"""The random-state convention of deltalift's reference generators and shufflers.

``random_state`` is ``None`` (fresh entropy), an ``int`` seed, or a ``numpy.random.Generator``
(used and advanced in place).  Draws are made with numpy, so a seed gives the same references on
every device.
"""

from __future__ import annotations

import numpy as np

RandomState = int | np.random.Generator | None


def numpy_generator(random_state: RandomState) -> np.random.Generator:
    """The numpy generator ``random_state`` stands for."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, int | np.integer) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise TypeError(f"random_state must be None, an int or a numpy.random.Generator, got {type(random_state).__name__}")
