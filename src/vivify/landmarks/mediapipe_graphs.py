"""The MediaPipe solutions vivify runs: Face Mesh, Face Detection and Selfie Segmentation, with the graph
bindings.

MediaPipe's package `__init__` imports every solution and the drawing utilities, which import matplotlib:
about 0.9 s of every start-up, for nothing vivify uses. Here the two package levels whose `__init__` does
that (`mediapipe` and `mediapipe.python.solutions`) are registered as plain namespaces, and only the
modules needed are imported from them. Where the caller has imported MediaPipe already, its modules are
used as they are.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys


def _register_namespace(name: str) -> None:
    """Make package `name` importable from without running its `__init__`. What that `__init__` would have
    added comes on first use (PEP 562's module `__getattr__`): a submodule is imported; any other name runs the
    `__init__` itself, so a program that imports mediapipe after vivify gets the whole package."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        raise ImportError(f"{name} is not an installed package")
    module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
    module.__path__ = list(spec.submodule_search_locations)
    loader = spec.loader

    def complete(attribute: str) -> object:
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")
        del module.__getattr__  # once: the package's own `__init__` defines the rest
        loader.exec_module(module)
        return getattr(module, attribute)

    module.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules[name] = module


if "mediapipe" not in sys.modules:
    _register_namespace("mediapipe")
    import mediapipe.python  # noqa: F401 - its own __init__ only loads the graph bindings

    _register_namespace("mediapipe.python.solutions")

from mediapipe.framework.formats import landmark_pb2  # noqa: E402
from mediapipe.python import packet_creator  # noqa: E402
from mediapipe.python._framework_bindings import _packet_getter, image_frame  # noqa: E402
from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation  # noqa: E402

# A proto-list packet's messages as the bytes MediaPipe holds. `packet_getter.get_proto_list` parses them into
# Python messages, which vivify would only serialise again to read them as one array (0.18 ms a frame against
# 0.01). A private binding: mediapipe is pinned to 0.10.21, and a missing one fails at import.
serialized_proto_list = _packet_getter._get_serialized_proto_list

__all__ = ["face_detection", "face_mesh", "image_frame", "landmark_pb2", "packet_creator", "selfie_segmentation",
           "serialized_proto_list"]
