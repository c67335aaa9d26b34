"""Functions as tools: schemas from type hints and docstrings, validation, outcomes."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from toolrpc.client import ToolOutcome, tool
from toolrpc.client.tools import as_tool, parse_docstring


class Unit(enum.Enum):
    CELSIUS = "C"
    FAHRENHEIT = "F"


class Place(BaseModel):
    city: str
    country: str | None = None


def forecast(
    place: Place,
    days: Annotated[int, Field(ge=1, le=7)] = 3,
    unit: Unit = Unit.CELSIUS,
    detail: Literal["short", "long"] = "short",
    note: str | None = None,
) -> dict[str, object]:
    """The weather forecast for a place.

    Longer text that is not part of the description.

    Args:
        place: where to look
        days (int): how many days ahead,
            counting today
        unit: the temperature unit
    """
    return {"city": place.city, "days": days, "unit": unit.value, "detail": detail}


def test_a_function_schema_has_its_hints_defaults_choices_nested_models_and_docstring() -> None:
    definition = tool(forecast).definition

    schema = definition.function.parameters
    properties = schema["properties"]
    assert definition.name == "forecast"
    assert definition.function.description == "The weather forecast for a place."
    assert schema["required"] == ["place"]
    assert properties["days"]["default"] == 3
    assert (properties["days"]["minimum"], properties["days"]["maximum"]) == (1, 7)
    assert properties["days"]["description"] == "how many days ahead, counting today"
    assert properties["detail"]["enum"] == ["short", "long"]
    assert schema["$defs"]["Unit"]["enum"] == ["C", "F"]
    assert schema["$defs"]["Place"]["required"] == ["city"]
    assert {"type": "null"} in properties["note"]["anyOf"]
    assert schema["additionalProperties"] is False


def test_the_decorator_takes_a_name_and_description_and_keeps_the_function_callable() -> None:
    @tool(name="add_numbers", description="Adds.")
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert add.definition.name == "add_numbers"
    assert add.definition.function.description == "Adds."
    assert add(2, b=3) == 5


async def test_arguments_are_validated_and_converted_before_the_function_runs() -> None:
    outcome = await tool(forecast).invoke({"place": {"city": "Oslo"}, "unit": "F"})

    assert outcome == ToolOutcome({"city": "Oslo", "days": 3, "unit": "F", "detail": "short"})


async def test_invalid_arguments_are_an_error_outcome_naming_each_problem() -> None:
    ran: list[int] = []

    @tool
    def count(n: int) -> int:
        ran.append(n)
        return n

    outcome = await count.invoke({"n": "many", "extra": 1})

    assert outcome.is_error
    assert isinstance(outcome.content, str)
    assert "n:" in outcome.content and "extra:" in outcome.content
    assert ran == []


async def test_an_exception_is_an_error_outcome_and_async_tools_are_awaited() -> None:
    @tool
    async def fails(city: str) -> str:
        raise LookupError(f"no weather for {city}")

    outcome = await fails.invoke({"city": "Atlantis"})

    assert outcome == ToolOutcome("LookupError: no weather for Atlantis", is_error=True)


def test_the_sync_client_runs_sync_tools_in_its_thread_and_async_ones_in_a_new_loop() -> None:
    @tool
    async def fails(city: str) -> str:
        raise LookupError(f"no weather for {city}")

    assert fails.invoke_sync({"city": "Atlantis"}).is_error
    assert tool(forecast).invoke_sync({"place": {"city": "Rome"}, "days": 9}).is_error
    assert tool(forecast).invoke_sync({"place": {"city": "Rome"}}).content == {
        "city": "Rome",
        "days": 3,
        "unit": "C",
        "detail": "short",
    }


def test_a_signature_with_star_args_or_an_object_that_is_no_function_is_refused() -> None:
    def spread(*cities: str) -> None:
        return None

    with pytest.raises(TypeError):
        tool(spread)
    with pytest.raises(TypeError):
        as_tool(42)  # type: ignore[arg-type]


def test_docstring_args_sections_of_google_style_are_read() -> None:
    summary, args = parse_docstring(
        "Look up.\n\nArgs:\n    q (str): the query\n    k: top\n\nReturns:\n    x: no"
    )

    assert summary == "Look up."
    assert args == {"q": "the query", "k": "top"}
