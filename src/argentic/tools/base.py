"""What a tool is: a name, a description, a pydantic argument model, and an async ``run``.

Two ways to write one:

- subclass :class:`BaseTool` and set ``name``, ``description``, ``Arguments`` and ``run``;
- put :func:`tool` on a typed function (sync or async): its parameters become the argument model,
  its docstring the description.

The JSON schema of the argument model is exactly what the LLM sees, so constraints written as
``Annotated[str, Field(max_length=80)]`` reach the model (small models need bounded strings).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from argentic.errors import ToolArgumentsError, ToolDefinitionError
from argentic.protocol import ToolSpec, topic_level
from argentic.validation import describe_validation_error

if TYPE_CHECKING:
    from argentic.tools.isolation import WorkerPool

#: Namespace of tool ids: uuid5(TOOL_ID_NAMESPACE, "service/tool") is stable across restarts.
TOOL_ID_NAMESPACE = uuid.UUID("6f0f3a52-8a43-5c1e-9a4e-1d1f5b0c2a77")


def tool_id(service_name: str, tool_name: str) -> str:
    """The stable id of ``tool_name`` served by ``service_name`` (the same after every restart)."""
    return uuid.uuid5(TOOL_ID_NAMESPACE, f"{service_name}/{tool_name}").hex


class NoArguments(BaseModel):
    """A tool that takes no arguments."""

    model_config = ConfigDict(extra="forbid")


class BaseTool(ABC):
    """A tool. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Arguments: ClassVar[type[BaseModel]] = NoArguments
    #: Seconds one call may take; None uses the service's default.
    timeout_s: ClassVar[float | None] = None

    def __init__(self) -> None:
        topic_level(self.tool_name, "tool name")

    # Instance-level accessors, so function tools can carry their own values.
    @property
    def tool_name(self) -> str:
        return self.name or type(self).__name__

    @property
    def tool_description(self) -> str:
        return self.description or (type(self).__doc__ or "").strip()

    @property
    def arguments_model(self) -> type[BaseModel]:
        return self.Arguments

    @property
    def call_timeout_s(self) -> float | None:
        return self.timeout_s

    @abstractmethod
    async def run(self, args: Any) -> Any:
        """Do the work; ``args`` is a validated ``Arguments`` instance. The return value must be
        JSON-serialisable (pydantic models, dataclasses, dicts, lists, numbers and strings are)."""

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments: what the LLM sees."""
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def spec(self, service_name: str) -> ToolSpec:
        return ToolSpec(
            id=tool_id(service_name, self.tool_name),
            name=self.tool_name,
            description=self.tool_description,
            parameters=self.parameters(),
            timeout_s=self.call_timeout_s,
        )

    def validate_arguments(self, arguments: dict[str, Any]) -> BaseModel:
        """``arguments`` as an ``Arguments`` instance, or :class:`ToolArgumentsError` saying what is wrong."""
        try:
            return self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            problems = describe_validation_error(exc, root="(arguments)", limit=8)
            raise ToolArgumentsError(f"invalid arguments for {self.tool_name}: {problems}") from exc

    async def invoke(
        self,
        arguments: dict[str, Any],
        *,
        isolate: bool = False,
        max_memory_mb: int | None = None,
        workers: WorkerPool | None = None,
    ) -> Any:
        """Validate ``arguments``, run, and return the JSON-ready result.

        ``isolate`` asks for a worker process when the tool is sync, one of ``workers`` when given
        (see :mod:`argentic.tools.isolation`); an async tool runs on the event loop regardless.
        """
        args = self.validate_arguments(arguments)
        return to_jsonable_python(await self.run(args))


class FunctionTool(BaseTool):
    """A tool made from a function by :func:`tool`. Calling it calls the function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
        isolate: bool | None = None,
    ) -> None:
        self.fn = fn
        self.isolate = isolate  # None: as the service says (ToolService isolate_sync_tools)
        self._name = name or fn.__name__
        self._description = description if description is not None else inspect.cleandoc(fn.__doc__ or "")
        self._timeout_s = timeout_s
        self._model, self._single_model = _arguments_model(fn, self._name)
        self._is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)
        super().__init__()

    @property
    def tool_name(self) -> str:
        return self._name

    @property
    def tool_description(self) -> str:
        return self._description

    @property
    def arguments_model(self) -> type[BaseModel]:
        return self._model

    @property
    def call_timeout_s(self) -> float | None:
        return self._timeout_s

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"FunctionTool({self._name!r})"

    def _call_args(self, args: Any) -> dict[str, Any]:
        if self._single_model:
            return {self._single_model: args}
        return {field: getattr(args, field) for field in type(args).model_fields}

    def runs_isolated(self, isolate: bool) -> bool:
        """Whether a call runs in a worker process, the service asking for ``isolate``."""
        wanted = self.isolate if self.isolate is not None else isolate
        return wanted and not self._is_async

    def call_here(self, arguments: dict[str, Any]) -> Any:
        """Validate ``arguments`` and call the function in this process: what a worker runs."""
        return self.fn(**self._call_args(self.validate_arguments(arguments)))

    async def invoke(
        self,
        arguments: dict[str, Any],
        *,
        isolate: bool = False,
        max_memory_mb: int | None = None,
        workers: WorkerPool | None = None,
    ) -> Any:
        if not self.runs_isolated(isolate):
            return await super().invoke(arguments)
        # Invalid arguments fail here, with their own error, without taking a worker. The worker
        # validates them again: the JSON arguments cross, which any argument model can rebuild.
        self.validate_arguments(arguments)
        if workers is not None:
            return await workers.call(self.call_here, arguments, max_memory_mb=max_memory_mb)
        from argentic.tools.isolation import WorkerPool

        async with WorkerPool(1) as own:
            return await own.call(self.call_here, arguments, max_memory_mb=max_memory_mb)

    async def run(self, args: Any) -> Any:
        call_args = self._call_args(args)
        if self._is_async:
            return await cast(Callable[..., Awaitable[Any]], self.fn)(**call_args)
        # A sync tool may block (files, HTTP, CPU): keep it off the event loop.
        return await asyncio.to_thread(self.fn, **call_args)


def _arguments_model(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel], str | None]:
    """The argument model of ``fn``; the second value names the parameter when ``fn`` takes one
    pydantic model as its only parameter (that model is then the argument model)."""
    signature = inspect.signature(fn)
    hints = get_type_hints(fn, include_extras=True)
    params = [p for p in signature.parameters.values() if p.name not in ("self", "cls")]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name}: *args and **kwargs cannot be described to a model")
        if param.name not in hints:
            raise ToolDefinitionError(f"tool {name}: parameter {param.name!r} needs a type annotation")
    if len(params) == 1:
        only = hints[params[0].name]
        if isinstance(only, type) and issubclass(only, BaseModel):
            return only, params[0].name
    fields: dict[str, Any] = {
        p.name: (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default) for p in params
    }
    model_name = "".join(part.capitalize() for part in name.split("_")) + "Arguments"
    model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    return model, None


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    isolate: bool | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    isolate: bool | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of a typed function: ``@tool`` or ``@tool(name=..., timeout_s=...)``.

    ``isolate=True`` runs each call of a sync function in a worker process, which the call's
    timeout kills (for tools that may compute or allocate without bound); ``None`` leaves it to
    the service.

    >>> @tool
    ... def add(a: int, b: int) -> int:
    ...     '''Add two integers.'''
    ...     return a + b
    >>> add.tool_name, add(1, 2)
    ('add', 3)
    """

    def wrap(function: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            function, name=name, description=description, timeout_s=timeout_s, isolate=isolate
        )

    return wrap(fn) if fn is not None else wrap
