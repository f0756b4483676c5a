"""The pipeline's entry points: one module per MLproject entry point, each a thin click command
over the taxi_duration library.

Models logged before the library moved out of this package pickled their classes under this
package's name (steps.model.TripDurationModel, steps.features.CategoricalPreprocessor). MLflow
loads such a model with the code it bundled, unless a process has imported this package first, as
every step has: there those two names lead to the library's modules, whose classes read the
state those pickles hold (tests/integration/test_legacy_store.py).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    f"{__name__}.model": "taxi_duration.tracking.pyfunc",
    f"{__name__}.features": "taxi_duration.model.features",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old name as the library module it became."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The library module ran when it was imported."""


sys.meta_path.append(_MovedModules())
