"""Type stubs of nexus_memory, the Python client of Memory Nexus (nexusd)."""

from datetime import datetime
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Iterable, Literal, Mapping, Optional, Sequence, Tuple, Type, TypedDict, Union

import sys

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__version__: str

Time = Union[datetime, int]
"""An aware datetime (naive means UTC) or milliseconds since the Unix epoch."""

Vector = Union[Sequence[float], Buffer]
"""A list of floats, or any float32 buffer (a numpy.float32 array is read with one copy)."""

RouteName = Literal["cache_only", "smart", "smart_routing", "full", "full_pipeline", "maximum", "maximum_intelligence"]

class _MemoryRequired(TypedDict):
    text: str

class MemoryDict(_MemoryRequired, total=False):
    namespace: str
    key: Optional[str]
    tags: Optional[Mapping[str, str]]
    vector: Optional[Vector]
    importance: float
    created_at: Optional[Time]

MemoryItem = Union[str, Tuple[str, str], MemoryDict]
"""A remember_many item: a text (namespace "default"), (text, namespace), or a dict of remember's arguments."""

class NexusError(Exception): ...
class DaemonNotRunning(NexusError): ...
class DaemonGone(NexusError): ...
class InvalidRequest(NexusError): ...
class NotFound(NexusError): ...
class Busy(NexusError): ...
class Timeout(NexusError): ...
class PermissionDenied(NexusError): ...
class StorageError(NexusError): ...
class ProtocolError(NexusError): ...

class Hit:
    """One recalled memory (immutable)."""

    @property
    def id(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def namespace(self) -> str: ...
    @property
    def tags(self) -> dict[str, str]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def created_at_ms(self) -> int: ...
    @property
    def why(self) -> dict[str, float]: ...

class RecallAnswer:
    """A recall's hits, its request id (for feedback) and how the daemon answered."""

    @property
    def request_id(self) -> int: ...
    @property
    def route(self) -> str: ...
    @property
    def route_reason(self) -> str: ...
    @property
    def degraded(self) -> Optional[str]: ...
    @property
    def hits(self) -> list[Hit]: ...

class Health:
    """The daemon's health probe."""

    @property
    def serving(self) -> bool: ...
    @property
    def uptime_s(self) -> int: ...
    @property
    def version(self) -> str: ...
    @property
    def write_failure(self) -> Optional[str]: ...
    @property
    def degraded(self) -> list[str]: ...

class Client:
    """A connection to nexusd, shareable between threads (calls release the GIL)."""

    def __init__(self, socket: Union[str, PathLike[str], None] = None, *, timeout: float = 5.0) -> None: ...
    @property
    def socket(self) -> Path: ...
    def remember(
        self,
        text: str,
        *,
        namespace: str = "default",
        key: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
        vector: Optional[Vector] = None,
        importance: float = 1.0,
        created_at: Optional[Time] = None,
    ) -> int: ...
    def remember_many(self, items: Iterable[MemoryItem]) -> list[int]: ...
    def recall(
        self,
        query: Optional[str],
        *,
        namespace: str = "default",
        k: int = 5,
        tags: Optional[Mapping[str, str]] = None,
        since: Optional[Time] = None,
        until: Optional[Time] = None,
        route: Optional[RouteName] = None,
        vector: Optional[Vector] = None,
    ) -> list[Hit]: ...
    def recall_answer(
        self,
        query: Optional[str],
        *,
        namespace: str = "default",
        k: int = 5,
        tags: Optional[Mapping[str, str]] = None,
        since: Optional[Time] = None,
        until: Optional[Time] = None,
        route: Optional[RouteName] = None,
        vector: Optional[Vector] = None,
    ) -> RecallAnswer: ...
    def forget(self, ids: Optional[Sequence[int]] = None, *, namespace: Optional[str] = None) -> int: ...
    def feedback(self, memory_id: int, recall_id: int, useful: bool = True) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def health(self) -> Health: ...
    def reconnect(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
