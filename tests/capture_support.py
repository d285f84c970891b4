"""What the capture tests share: a pipeline stand-in that records the calls a front end makes."""

from __future__ import annotations

from typing import Any


class RecordingPipeline:
    """A pipeline that records every call it gets, to compare two ways of feeding a capture."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def open(self, info: Any) -> None:
        self.calls.append(("open", info))

    def data(self, *args: Any) -> None:
        self.calls.append(("data", *args))

    def eof(self, *args: Any) -> None:
        self.calls.append(("eof", *args))

    def gap(self, *args: Any) -> None:
        self.calls.append(("gap", *args))

    def close(self, *args: Any) -> None:
        self.calls.append(("close", *args))
