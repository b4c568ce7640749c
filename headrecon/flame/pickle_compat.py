"""Reading the official FLAME pickles without chumpy.

The official FLAME 2020 / 2023 pickles were written by Python 2 with `chumpy` installed: arrays such as
`shapedirs`, `posedirs`, `weights` and `J` are `chumpy.ch.Ch` objects, `J_regressor` is a
`scipy.sparse.csc_matrix`. chumpy does not import on numpy >= 1.24, so we unpickle with a restricted
`pickle.Unpickler` that maps every `chumpy.*` class to :class:`ChumpyStandIn`, an object that only keeps its
pickled state. A leaf `Ch` object keeps its value in its state dict under ``x``; :func:`to_numpy` unwraps it.

Only classes from numpy, scipy.sparse, chumpy and a few builtins may be loaded, so a malicious file cannot run
arbitrary code through `find_class`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChumpyStandIn", "load_pickle", "to_numpy"]


class ChumpyStandIn:
    """Stand-in for any chumpy class: remembers the pickled class name and state."""

    chumpy_class = "chumpy.ch.Ch"

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    @property
    def state(self) -> Any:
        return self.__dict__.get("_state")

    def __repr__(self) -> str:
        return f"<chumpy stand-in for {self.chumpy_class}>"


def _stand_in_for(module: str, name: str) -> type:
    return type(name, (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})


_ALLOWED_PREFIXES = ("numpy", "scipy.sparse", "scipy._lib")
_ALLOWED_BUILTINS = {
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "frozenset"),
    ("builtins", "slice"),
    ("__builtin__", "slice"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
}


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_in_for(module, name)
        if (module, name) in _ALLOWED_BUILTINS:
            return super().find_class(module, name)
        if module.startswith(_ALLOWED_PREFIXES):
            # scipy renamed its private sparse modules (scipy.sparse.csc -> scipy.sparse._csc); the public
            # class names still live in scipy.sparse.
            if module.startswith("scipy.sparse") and name.endswith("_matrix"):
                import scipy.sparse

                return getattr(scipy.sparse, name)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: not an array, sparse matrix or chumpy type"
        )


def load_pickle(path: str | Path) -> Any:
    """Load a (possibly Python 2, possibly chumpy-bearing) pickle; chumpy objects become stand-ins."""
    data = Path(path).read_bytes()
    return _FlameUnpickler(io.BytesIO(data), encoding="latin1").load()


def to_numpy(value: Any, *, what: str = "array") -> np.ndarray:
    """Unwrap a value read by :func:`load_pickle` into a dense numpy array.

    Handles numpy arrays, chumpy stand-ins (their ``x`` state), scipy sparse matrices and nested lists.
    Raises ``TypeError`` naming `what` for anything else (e.g. a non-leaf chumpy expression).
    """
    if isinstance(value, ChumpyStandIn):
        state = value.state
        if isinstance(state, dict) and "x" in state:
            return to_numpy(state["x"], what=what)
        raise TypeError(
            f"{what}: a {value.chumpy_class} object without a stored value 'x' (a chumpy expression, not an array)"
        )
    if hasattr(value, "toarray") and hasattr(value, "tocsr"):
        return np.asarray(value.toarray())
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as exc:  # pragma: no cover - defensive, message matters more than the type
        raise TypeError(f"{what}: cannot convert {type(value).__name__} to an array") from exc
