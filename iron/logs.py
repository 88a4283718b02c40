"""Process logging for the control plane and the sidecar.

No stack trace reaches a log line: an exception, ours or a library's (asyncpg
logs pool failures with their traceback), is reduced to its type. Messages of
exceptions are left out too, because a driver's message can quote SQL or data.
"""

import logging
from types import TracebackType

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class _NoTracebacks(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:
        return f"[{ei[0].__name__ if ei[0] else 'exception'}]"

    def formatStack(self, stack_info: str) -> str:
        return ""


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_NoTracebacks(_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
