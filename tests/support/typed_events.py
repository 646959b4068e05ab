"""Events read back with their type: ``parsed`` (one event of a known class), ``each`` (events
that must all be of one class) and ``only`` (the events of one class among others), so a test
reads a PageScanned's fields as a PageScanned's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sohoa.events import Event, parse_event

E = TypeVar("E", bound=Event)


def parsed(raw: bytes | str | dict[str, Any], cls: type[E]) -> E:
    """``raw`` parsed by the contract; an event of another class fails the test."""
    event = parse_event(raw)
    assert isinstance(event, cls), f"{cls.__name__} expected, got {event.NAME}"
    return event


def only(events: Iterable[Event], cls: type[E]) -> list[E]:
    """The events of class ``cls``, in order."""
    return [e for e in events if isinstance(e, cls)]


def each(events: Iterable[Event], cls: type[E]) -> list[E]:
    """``events``, every one of class ``cls`` (one of another class fails the test)."""
    out: list[E] = []
    for e in events:
        assert isinstance(e, cls), f"{cls.__name__} expected, got {e.NAME}"
        out.append(e)
    return out
