"""Per-model prompts: a pool entry's `system_prompt` and per-family `templates`, applied to
every call of that model through one function (`model_messages`).

A template wraps the user's latest message as it arrives (its answer contract included) at
``{question}``; the family is the answer contract the prompt states (`answers.CONTRACTS`),
and a prompt that states none (free text, the `instruction` family, a family of one's own) takes
the `instruction` template. The system prompt goes first in the one leading system message
(several chat templates accept only one): before the conversation's own system message, and
before the aggregation instructions of a fusion, which takes the system prompt only.
`prompt_digest` names what a model sees for a family: profiling keys its cache and records each
cell's prompt with it, so a prompt change re-asks only that model's cells.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, SystemMessage

from smcs_graph._input import message_text
from smcs_graph.errors import ConfigError

if TYPE_CHECKING:
    from smcs_graph.models.pool import PoolModel

__all__ = [
    "FREE_TEXT",
    "PLACEHOLDER",
    "TEMPLATE_FAMILIES",
    "check_prompts",
    "model_messages",
    "prompt_digest",
    "template_family",
]

PLACEHOLDER = "{question}"
"""Where a template puts the user's prompt text."""
FREE_TEXT = "instruction"
"""The template of prompts that state no answer contract."""
TEMPLATE_FAMILIES = ("multiple_choice", "math", "numeric", "code", FREE_TEXT)
"""The families a template may name (`questions.FAMILIES`)."""


def check_prompts(name: str, system_prompt: Any, templates: Any) -> dict[str, str]:
    """Check a pool model's `system_prompt` and `templates`; the templates as a plain dict.
    ConfigError names what is wrong and what to write instead."""
    where = f"pool model {name!r}"
    if not isinstance(system_prompt, str):
        raise ConfigError(
            f"{where}: system_prompt must be text (got {type(system_prompt).__name__})"
        )
    if not isinstance(templates, Mapping):
        raise ConfigError(
            f"{where}: templates must be a mapping of family to template text, e.g. "
            f'{{math: "Be careful.\\n\\n{PLACEHOLDER}"}} (got {type(templates).__name__})'
        )
    checked: dict[str, str] = {}
    for family, template in templates.items():
        if family not in TEMPLATE_FAMILIES:
            raise ConfigError(
                f"{where}: templates names unknown family {family!r}; known families: "
                f"{', '.join(TEMPLATE_FAMILIES)} ({FREE_TEXT}: prompts that state no answer "
                "contract)"
            )
        if not isinstance(template, str) or template.count(PLACEHOLDER) != 1:
            raise ConfigError(
                f"{where}: the {family} template must be text containing {PLACEHOLDER} exactly "
                f"once, where the user's prompt goes (got {template!r})"
            )
        checked[family] = template
    return checked


def template_family(family: str | None) -> str:
    """The template a prompt of `family` takes: its own for a family with an answer contract,
    else `FREE_TEXT`."""
    from smcs_graph.answers import CONTRACTS

    return family if family is not None and family in CONTRACTS else FREE_TEXT


def model_messages(
    member: PoolModel,
    family: str | None,
    messages: Sequence[BaseMessage],
    *,
    template: bool = True,
) -> list[BaseMessage]:
    """The messages `member` is sent for a conversation of `family`: its template (when
    `template`) around the latest user message, its system prompt merged at the head. A model
    without either gets `messages` as they are."""
    out = list(messages)
    wrapper = member.templates.get(template_family(family)) if template else None
    if wrapper is not None:
        for i in range(len(out) - 1, -1, -1):
            if out[i].type == "human":
                out[i] = _wrapped(out[i], wrapper)
                break
    system = member.system_prompt
    if system:
        if out and isinstance(out[0], SystemMessage):
            out[0] = SystemMessage(f"{system}\n\n{message_text(out[0])}")
        else:
            out.insert(0, SystemMessage(system))
    return out


def _wrapped(message: BaseMessage, template: str) -> BaseMessage:
    """`message` with its content at the template's placeholder (other parts of a multi-part
    content, e.g. images, kept between the template's text before and after)."""
    before, after = template.split(PLACEHOLDER)
    content = message.content
    if isinstance(content, str):
        new: Any = f"{before}{content}{after}"
    else:
        head = [{"type": "text", "text": before}] if before else []
        tail = [{"type": "text", "text": after}] if after else []
        new = [*head, *content, *tail]
    return message.model_copy(update={"content": new})


def prompt_digest(member: PoolModel, family: str | None) -> str:
    """A short stable digest of what `member` is sent for a `family` prompt beyond the prompt
    itself (its system prompt and that family's template); "" for a model with neither."""
    template = member.templates.get(template_family(family), "")
    if not member.system_prompt and not template:
        return ""
    text = json.dumps([member.system_prompt, template], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
