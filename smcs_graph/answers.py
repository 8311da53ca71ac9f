"""Answer contracts: how each question family asks for its final answer, how long a reply may
run, and how a reply that the token limit cut off is finished.

One source for every path that asks a model a question: `questions.prompt_for` appends a
family's `instruction`; the graph (referencers and fusions), `smcs profile`, `smcs eval` and the
default matrix read a family's token limit from the settings (`SMCSConfig.tokens_for`) and
finish a cut-off reply with `recovery_messages` / `join_recovery`. `PROMPT_VERSION` names the
wording; changing an instruction changes every prompt, so the profile cache re-asks exactly the
questions whose prompt changed.

Recovery: a reply that reached its token limit (`hit_limit`) with no final answer the family's
extractor can find (`final_answer`) gets one short follow-up call; so does, in the families whose
contract says `recover_unfinished` (multiple choice, math), a reply that ended on its own without
one (a small model that reasons to the end and never writes the answer line). The follow-up is
the conversation, then the reply as the assistant's own unfinished turn ending in the family's
forced prefix (e.g. ``The answer is (``), continued for a few tokens. llama.cpp, vLLM and
Anthropic continue a trailing assistant message; a server that answers it as a new turn still
gives text after the prefix, which the extractor reads the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

__all__ = [
    "CONTRACTS",
    "PROMPT_VERSION",
    "AnswerContract",
    "detect_family",
    "final_answer",
    "hit_limit",
    "join_recovery",
    "needs_recovery",
    "recovered_message",
    "recovery_messages",
]

PROMPT_VERSION = 2
"""Version of the contracts' wording (1: the prompts the first matrix was profiled with)."""


def _letter(text: str) -> str | None:
    from smcs_graph.grading.multiple_choice import extract_letter
    from smcs_graph.questions import LETTERS

    return extract_letter(text, LETTERS)[0]


def _math(text: str) -> str | None:
    from smcs_graph.grading.math_answer import extract_final_answer

    found = extract_final_answer(text)
    return None if found is None else "".join(found.split()) or None


def _stated_number(text: str) -> str | None:
    """A number the reply *states* as its answer (not merely the last number it wrote)."""
    from smcs_graph.grading.numeric import _STATED

    for pattern in _STATED:
        matches = pattern.findall(text)
        if matches:
            return str(matches[-1])
    return None


def _code(text: str) -> str | None:
    """A closed ```python block (an unclosed one was cut off)."""
    start = text.find("```")
    if start < 0:
        return None
    end = text.find("```", start + 3)
    return text[start : end + 3] if end >= 0 else None


@dataclass(frozen=True)
class AnswerContract:
    """How one family's questions ask for their final answer."""

    family: str
    instruction: str
    """Appended to the question (`questions.prompt_for`); the project's own wording."""
    marker: str
    """A phrase of `instruction` by which a prompt is recognised as this family's."""
    extract: Callable[[str], str | None]
    """The final answer a reply states (None: none)."""
    recovery_prefix: str | None
    """What a cut-off reply is continued from (None: no recovery for this family)."""
    recovery_tokens: int = 16
    """Tokens the follow-up may write after the prefix."""
    recover_unfinished: bool = False
    """Also finish a reply that ended on its own without a final answer (not only one cut off
    at its limit). For families whose grader reads nothing but the stated answer (a letter, a
    boxed result); a numeric reply's last number is graded even when it states none."""


CONTRACTS: Mapping[str, AnswerContract] = {
    "multiple_choice": AnswerContract(
        family="multiple_choice",
        instruction=(
            'Reply first with the line "The answer is (X)", where X is the letter of the '
            "correct option, then justify it in one or two sentences."
        ),
        marker='"The answer is (X)"',
        extract=_letter,
        recovery_prefix="\n\nThe answer is (",
        recovery_tokens=4,
        recover_unfinished=True,
    ),
    "math": AnswerContract(
        family="math",
        instruction="Solve the problem step by step and put the final answer in \\boxed{}.",
        marker="\\boxed{}",
        extract=_math,
        recovery_prefix="\n\nThe final answer is $\\boxed{",
        recovery_tokens=32,
        recover_unfinished=True,
    ),
    "numeric": AnswerContract(
        family="numeric",
        instruction=(
            "Work it out step by step, then finish with the line "
            '"The answer is N", where N is the final number alone.'
        ),
        marker='"The answer is N"',
        extract=_stated_number,
        recovery_prefix="\n\nThe answer is",  # no trailing space: Anthropic refuses one
        recovery_tokens=12,
    ),
    "code": AnswerContract(
        family="code",
        instruction="in a single ```python code block",
        marker="```python code block",
        extract=_code,
        recovery_prefix=None,  # a program cut off midway is not finished by a few tokens
    ),
}
"""The built-in families' contracts. Families without one (instruction, reasoning_gym, free
text) keep `max_tokens` and get no recovery."""


def detect_family(prompt: str) -> str | None:
    """The family whose contract the prompt states (its marker phrase), else None."""
    for contract in CONTRACTS.values():
        if contract.marker in prompt:
            return contract.family
    return None


def final_answer(family: str | None, text: str) -> str | None:
    """The final answer `text` states under `family`'s contract (None: none, or no contract)."""
    contract = CONTRACTS.get(family or "")
    return None if contract is None else contract.extract(text)


def hit_limit(message: AIMessage, max_tokens: int | None) -> bool:
    """Whether a reply stopped at its token limit: finish reason "length" (OpenAI-compatible
    servers, llama.cpp), "max_tokens" (Anthropic), or as many output tokens as the limit."""
    metadata: Mapping[str, Any] = message.response_metadata or {}
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    if reason in ("length", "max_tokens", "MAX_TOKENS"):
        return True
    usage: Mapping[str, Any] = message.usage_metadata or {}
    output = usage.get("output_tokens", 0)
    return max_tokens is not None and int(output or 0) >= max_tokens


def needs_recovery(family: str | None, message: AIMessage, max_tokens: int | None) -> bool:
    """Whether `message` lacks a final answer that its family's recovery can finish: it was
    cut off at its limit without one, or (`recover_unfinished`) it ended without one."""
    contract = CONTRACTS.get(family or "")
    if contract is None or contract.recovery_prefix is None:
        return False
    if contract.extract(_text(message)) is not None:
        return False
    return contract.recover_unfinished or hit_limit(message, max_tokens)


def recovery_messages(
    conversation: Sequence[BaseMessage], partial: str, family: str
) -> list[BaseMessage]:
    """The follow-up's input: the conversation, then the cut-off reply ending in the prefix."""
    prefix = CONTRACTS[family].recovery_prefix or ""
    return [*conversation, AIMessage(content=partial + prefix)]


def join_recovery(partial: str, family: str, continuation: str) -> str:
    """The finished reply: `partial`, the prefix, and what the follow-up wrote after it (a
    server that echoes the prefilled turn returns it whole; the echo is dropped)."""
    prefilled = partial + (CONTRACTS[family].recovery_prefix or "")
    if continuation.startswith(prefilled):
        continuation = continuation[len(prefilled) :]
    return prefilled + continuation


def recovered_message(original: AIMessage, follow_up: AIMessage, family: str) -> AIMessage:
    """One reply from a cut-off `original` and its `follow_up`: the joined text, usage summed
    over both calls, and `response_metadata["smcs_recovery"]` saying what happened (the
    follow-up's own text, whether a final answer was found after it)."""
    text = join_recovery(_text(original), family, _text(follow_up))
    usage: dict[str, Any] = {}
    for part in (original.usage_metadata, follow_up.usage_metadata):
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            usage[key] = usage.get(key, 0) + _tokens(part, key)
    recovery = {
        "family": family,
        "prefix": CONTRACTS[family].recovery_prefix,
        "continuation": _text(follow_up)[-200:],
        "answered": final_answer(family, text) is not None,
        "output_tokens": _tokens(follow_up.usage_metadata, "output_tokens"),
    }
    return AIMessage(
        content=text,
        response_metadata={**original.response_metadata, "smcs_recovery": recovery},
        usage_metadata=usage,
        id=original.id,
    )


def _tokens(usage: Any, key: str) -> int:
    return int((usage or {}).get(key, 0) or 0)


def _text(message: BaseMessage) -> str:
    from smcs_graph._input import message_text

    return message_text(message)
