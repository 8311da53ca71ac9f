"""The OpenAI chat completion request: validation into a `ChatRequest`, or a 400/404 saying why.

Fields with an SMCS counterpart (temperature, max_tokens, seed, presence_penalty) override the
server's `SMCSConfig` for one run; fields with none are accepted and ignored; anything else is
refused by name.

The body's `smcs` object (an extension field) takes `trace` and a per-request budget:
`max_calls`, `max_cost`, `deadline_s` (SMCSConfig's fields of those names). The operator's caps
(`ServerSettings.max_calls_cap`, ...) bound them: a request above a cap gets 400 naming the
cap, and a request that sets no value runs at the server's own value lowered to the cap, so no
run plans more than the caps allow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from smcs_graph._input import retrieval_query
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError, InvalidQuestionError
from smcs_graph.server.errors import bad_request, unknown_model
from smcs_graph.server.settings import ServerSettings

__all__ = ["MAX_JSON_DEPTH", "ChatRequest", "loads_json", "parse_request"]

MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in a request body or in tool-call arguments. A chat request needs
a few levels (a tool's JSON schema a few dozen); deeper input only overflows recursive code."""

# Request fields mapped onto SMCSConfig (request name -> config field).
_CONFIG_FIELDS = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
}
# Accepted for compatibility; they have no SMCS counterpart and do not change the run.
_IGNORED_FIELDS = frozenset(
    {
        "user",
        "metadata",
        "store",
        "parallel_tool_calls",
        "top_p",
        "frequency_penalty",
        "logit_bias",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)
_HANDLED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "stop",
        "n",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "response_format",
        "smcs",
    }
)
_KNOWN_FIELDS = _HANDLED_FIELDS | _IGNORED_FIELDS | set(_CONFIG_FIELDS)
_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class ChatRequest:
    """A validated chat completion request."""

    messages: list[BaseMessage]
    overrides: dict[str, Any]
    stop: list[str] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    stream: bool = False
    include_usage: bool = False
    trace: bool = False


def parse_request(
    payload: Any,
    *,
    model_name: str,
    smcs_settings: SMCSConfig,
    trace_header: bool,
    server: ServerSettings | None = None,
) -> ChatRequest:
    """Validate an OpenAI chat completion body; raise `APIError` saying what is wrong.

    `model_name` is the one model id served; `smcs_settings` are the settings the request's
    fields override (checked here, so a bad value is a 400 before the run is admitted);
    `trace_header` is whether the client sent `X-SMCS-Trace`; `server` holds the operator's
    budget caps (None: none).
    """
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_request")
    unknown = sorted(set(payload) - _KNOWN_FIELDS)
    if unknown:
        raise bad_request(
            f"unrecognized request field(s): {', '.join(unknown)}; this server accepts "
            f"{', '.join(sorted(_KNOWN_FIELDS))}",
            param=unknown[0],
            code="unknown_parameter",
        )
    name = payload.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("'model' is required: the id of a model from GET /v1/models", "model")
    if name != model_name:
        raise unknown_model(name, model_name, "(GET /v1/models)")
    messages = _messages(payload.get("messages"))
    try:
        retrieval_query(messages)
    except InvalidQuestionError as exc:
        raise bad_request(str(exc), "messages") from exc

    overrides: dict[str, Any] = {}
    for request_field, config_field in _CONFIG_FIELDS.items():
        value = payload.get(request_field)
        if value is None:
            continue
        try:
            smcs_settings.replace(**{config_field: value})
        except ConfigError as exc:
            raise bad_request(f"'{request_field}': {exc}", request_field) from exc
        overrides[config_field] = value

    n = payload.get("n")
    if n not in (None, 1):
        raise bad_request("'n' must be 1: SMCS returns one answer (its best aggregation)", "n")
    if payload.get("logprobs") or payload.get("top_logprobs") is not None:
        raise bad_request(
            "'logprobs' are not available: the answer is chosen among fused candidates; "
            "ask for the trace ('smcs': {'trace': true}) to see each candidate's perplexity",
            "logprobs",
        )
    response_format = payload.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise bad_request(
            "only response_format {'type': 'text'} is supported; for structured output, "
            "pass a tool (function) with the schema and tool_choice naming it",
            "response_format",
        )
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    include_usage = False
    options = payload.get("stream_options")
    if options is not None:
        if not stream:
            raise bad_request(
                "'stream_options' is only allowed with 'stream': true", "stream_options"
            )
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise bad_request("'stream_options' must be {'include_usage': bool}", "stream_options")
        include_usage = bool(options.get("include_usage", False))
    tools, tool_choice = _tools(payload.get("tools"), payload.get("tool_choice"))
    smcs = payload.get("smcs") or {}
    if (
        not isinstance(smcs, dict)
        or set(smcs) - _SMCS_FIELDS
        or not isinstance(smcs.get("trace", False), bool)
    ):
        raise bad_request(_SMCS_SHAPE, "smcs")
    overrides.update(_budget(smcs, smcs_settings, server.budget_caps() if server else {}))
    return ChatRequest(
        messages=messages,
        overrides=overrides,
        stop=_stop(payload.get("stop")),
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        include_usage=include_usage,
        trace=bool(smcs.get("trace", False)) or trace_header,
    )


_SMCS_FIELDS = frozenset({"trace", "max_calls", "max_cost", "deadline_s"})
_SMCS_SHAPE = (
    "'smcs' must be an object {'trace': bool, 'max_calls': int, 'max_cost': number, "
    "'deadline_s': number} (every key optional)"
)


def _budget(
    smcs: dict[str, Any], smcs_settings: SMCSConfig, caps: dict[str, float | int]
) -> dict[str, Any]:
    """The request's budget overrides, within the operator's caps (see the module)."""
    out: dict[str, Any] = {}
    for name in ("max_calls", "max_cost", "deadline_s"):
        value, cap = smcs.get(name), caps.get(name)
        if value is None:
            current = getattr(smcs_settings, name)
            if cap is not None and (current is None or current > cap):
                out[name] = cap
            continue
        try:
            smcs_settings.replace(**{name: value})
        except ConfigError as exc:
            raise bad_request(f"'smcs.{name}': {exc}", f"smcs.{name}") from exc
        if cap is not None and value > cap:
            raise bad_request(
                f"'smcs.{name}' is {value:g}, above this server's cap of {cap:g}; "
                f"ask for at most {cap:g} (or leave it out to run at the cap)",
                f"smcs.{name}",
                code="above_cap",
            )
        out[name] = value
    return out


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) and s for s in value):
        return list(value)
    raise bad_request("'stop' must be a string or a list of non-empty strings", "stop")


def _tools(tools: Any, tool_choice: Any) -> tuple[list[dict[str, Any]], Any]:
    if tools is None:
        if tool_choice not in (None, "none"):
            raise bad_request("'tool_choice' needs 'tools'", "tool_choice")
        return [], None
    if not isinstance(tools, list):
        raise bad_request("'tools' must be a list of function tools", "tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise bad_request(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                "'description': ..., 'parameters': {...}}}}",
                f"tools[{i}]",
            )
    names = {t["function"]["name"] for t in tools}
    if tool_choice is None or tool_choice in ("none", "auto", "required"):
        return tools, tool_choice
    chosen = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if (
        not isinstance(tool_choice, dict)
        or tool_choice.get("type") != "function"
        or not isinstance(chosen, dict)
        or chosen.get("name") not in names
    ):
        raise bad_request(
            "'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', "
            f"'function': {{'name': one of {sorted(names)}}}}}",
            "tool_choice",
        )
    return tools, tool_choice


def _content(value: Any, where: str, *, optional: bool = False) -> Any:
    """Validate message content: a string or a list of content parts (text parts checked)."""
    if value is None and optional:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for j, part in enumerate(value):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise bad_request(
                    f"{where}[{j}] must be a content part with a 'type'", f"{where}[{j}]"
                )
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise bad_request(
                    f"{where}[{j}] is a text part without a string 'text'", f"{where}[{j}]"
                )
        return value
    raise bad_request(f"{where} must be a string or a list of content parts", where)


def _messages(raw: Any) -> list[BaseMessage]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty list of chat messages", "messages")
    out: list[BaseMessage] = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", where)
        role = item.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"{where}.role must be one of {', '.join(_ROLES)} (got {role!r})", where
            )
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise bad_request(f"{where}.name must be a string", f"{where}.name")
        if role in ("system", "developer"):
            out.append(SystemMessage(_content(item.get("content"), f"{where}.content")))
        elif role == "user":
            out.append(HumanMessage(_content(item.get("content"), f"{where}.content"), name=name))
        elif role == "assistant":
            calls = _tool_calls(item.get("tool_calls"), where)
            content = _content(item.get("content"), f"{where}.content", optional=True)
            out.append(AIMessage(content=content, tool_calls=calls, name=name))
        else:
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(
                    f"{where}: a tool message needs 'tool_call_id'", f"{where}.tool_call_id"
                )
            content = _content(item.get("content"), f"{where}.content")
            out.append(ToolMessage(content=content, tool_call_id=call_id))
    return out


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(raw):
        here = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"{here} must have a 'function' with a 'name'", here)
        arguments = function.get("arguments") or "{}"
        try:
            args = loads_json(arguments) if isinstance(arguments, str) else None
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise bad_request(f"{here}.function.arguments must be a JSON object string", here)
        calls.append({"name": function["name"], "args": args, "id": call.get("id")})
    return calls


def loads_json(text: str | bytes) -> Any:
    """Parse JSON nested at most `MAX_JSON_DEPTH` levels; raise `ValueError` saying why not."""
    too_deep = f"nested too deeply (more than {MAX_JSON_DEPTH} levels of arrays and objects)"
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(too_deep) from None
    pending = [(value, 1)]
    while pending:  # iterative: the value may be nested deeper than the recursion limit
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(too_deep)
            pending.extend((child, depth + 1) for child in item)
    return value
