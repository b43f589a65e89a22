"""Parse a GGUF file once per load: transformers' GGUF loading, without its repeated parsing.

Loading a GGUF model with transformers parses the file three times (config, weights, tokenizer: ~4.6 s each
for SmolLM2-135M on 2 cores, gguf's reader walking 49k vocabulary strings in Python) and builds gguf's tensor-name
map once per tensor (~6.5 s in all); dequantizing the weights themselves takes ~1.5 s. Within
:func:`parsed_once` the ``gguf`` package hands out one reader per file and one name map per (architecture, block
count). Both are only read by transformers, so the weights are the same (a test compares them bit for bit).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()  # the patch is process-wide: one load at a time inside it


@contextlib.contextmanager
def parsed_once() -> Iterator[None]:
    """Within the block, ``gguf.GGUFReader(path)`` returns one reader per (file, mode) and
    ``gguf.get_tensor_name_map`` is memoized; both are restored afterwards."""
    import gguf

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: str | Path, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)  # type: ignore[arg-type]
        return readers[key]

    with _LOCK:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(original_map)  # type: ignore[misc,assignment]
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map  # type: ignore[misc]
