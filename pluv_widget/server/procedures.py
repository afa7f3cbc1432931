"""Typed procedures: an event whose input a pydantic model validates, and an optional handler.

pluv's ``io.procedure.input(Model).broadcast(fn)``; in Python ``@io.procedure(event, input=Model)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..protocol import ErrorCode
from .hooks import Context

log = logging.getLogger("pluv_widget.server")

ProcedureHandler = Callable[[Any, Context], Any]


@dataclass(frozen=True)
class Procedure:
    """A typed event: its input model, and an optional handler returning ``{event: data}``."""

    event: str
    input: type[BaseModel]
    handler: ProcedureHandler | None = None


@dataclass(frozen=True)
class Refused:
    """A procedure call answered with an error to its sender only."""

    code: ErrorCode
    message: str


async def run_procedure(procedure: Procedure, data: Any, context: Context) -> dict[str, Any] | Refused:
    """Validate ``data`` and run the handler: the events to broadcast (``{event: json data}``),
    or why the call is refused. Without a handler the validated input is relayed as is."""
    try:
        value = procedure.input.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or 'input'}: {problem['msg']}" for problem in error.errors()
        )
        return Refused(ErrorCode.INVALID_INPUT, f"invalid input for {procedure.event!r}: {problems}")
    outputs: Any = {procedure.event: value}
    if procedure.handler is not None:
        try:
            outputs = procedure.handler(value, context)
            if asyncio.iscoroutine(outputs):
                outputs = await outputs
        except Exception as error:
            log.exception("procedure %s failed", procedure.event)
            return Refused(ErrorCode.PROCEDURE_FAILED, f"{procedure.event!r} failed: {error}")
    return {
        event: payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        for event, payload in (outputs or {}).items()
    }
