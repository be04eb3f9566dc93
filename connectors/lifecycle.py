"""`async with` for the connectors' sources and sinks, from their open() and close()."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class OpenClose:
    """`async with x:` awaits `x.open()` on the way in and `x.close()` on the way out."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
