"""Reading the question out of a conversation, and rejecting bad input before any model call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, convert_to_messages

from smcs_graph.errors import InvalidQuestionError


def message_text(message: BaseMessage) -> str:
    """The plain text of a message (text blocks of multimodal content joined)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def conversation(state: Mapping[str, Any]) -> list[AnyMessage]:
    """The run's conversation: `messages`, or a single user turn built from `question`."""
    messages = state.get("messages") or []
    question = state.get("question")
    if not messages:
        if question is None:
            raise InvalidQuestionError(
                "no input: give 'messages' (a conversation ending with a user message) or "
                "'question' (a string)"
            )
        if not isinstance(question, str):
            raise InvalidQuestionError(
                f"'question' must be a string (got {type(question).__name__})"
            )
        return [HumanMessage(question)]
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise InvalidQuestionError("'messages' must be a list of chat messages")
    try:
        return list(convert_to_messages(messages))  # type: ignore[arg-type]
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InvalidQuestionError(
            f"'messages' holds something that is not a message: {exc}"
        ) from exc


def retrieval_query(messages: Sequence[BaseMessage]) -> str:
    """The latest user message's text: it drives retrieval. Raises on empty or non-text input."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            text = message_text(message).strip()
            if not text:
                raise InvalidQuestionError(
                    "the latest user message has no text (empty, whitespace, or non-text "
                    "content only); SMCS needs a question in text to retrieve similar bank "
                    "questions"
                )
            return text
    raise InvalidQuestionError(
        "the conversation has no user message; end it with the user's question"
    )
