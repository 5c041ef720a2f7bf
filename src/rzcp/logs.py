"""The gateway's log: its own lines beside uvicorn's, each stamped, and no database values in them.

Patient data belongs in the audit trail only. A database error's text can carry a row's values (the
parameters of a failed statement, which the engines hide, and PostgreSQL's DETAIL, "Failing row contains
(...)", which they cannot), and a logged traceback prints every exception in its chain; so a record whose
exception is a database error keeps the error's kind and SQLSTATE and drops the rest.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from sqlalchemy.exc import DBAPIError


class UtcFormatter(logging.Formatter):
    converter = time.gmtime


class NoDatabaseValues(logging.Filter):
    """Replaces the traceback of a database error (anywhere in the record's exception chain) by one line
    naming its kind and SQLSTATE, without the message, the DETAIL or the statement's values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            found = _database_error(record.exc_info[1])
            if found is not None:
                record.msg = f"{record.getMessage()} [{found}; its text withheld from the log]"
                record.args = None
                record.exc_info = None
                record.exc_text = None
        return True


def _database_error(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) or type(current).__module__.startswith(("asyncpg", "sqlite3")):
            code = getattr(current, "sqlstate", None) or getattr(
                getattr(current, "orig", None), "sqlstate", None
            )
            return f"database error {type(current).__name__}" + (f" (SQLSTATE {code})" if code else "")
        current = current.__cause__ or current.__context__
    return None


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with the gateway's own loggers beside it and every line stamped with its time
    (UTC) and level. Without it the `rzcp.*` loggers had no handler: their warnings came out bare, and
    their INFO lines, the audit checkpoints the trail's verification can be compared with, not at all
    (an operator's walkthrough). Every handler drops database values (`NoDatabaseValues`)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    stamp = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
    config["formatters"]["rzcp"] = {
        "()": "rzcp.logs.UtcFormatter",
        "fmt": stamp,
        "datefmt": "%Y-%m-%dT%H:%M:%S",
    }
    config["formatters"]["default"] = config["formatters"]["rzcp"]
    config["filters"] = {"no_database_values": {"()": "rzcp.logs.NoDatabaseValues"}}
    config["handlers"]["rzcp"] = {
        "formatter": "rzcp",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["no_database_values"]
    config["loggers"]["rzcp"] = {"handlers": ["rzcp"], "level": level.upper(), "propagate": False}
    return config
