"""Turn text and message lists into TRL's conversational form, checking them on the way.

Every loader produces lists of ``{"role": ..., "content": ...}`` messages. The helpers here accept
the shapes people actually have (plain strings, role/content lists, ShareGPT ``from``/``value``
lists, Anthropic HH ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` transcripts), map foreign role names,
and check turn order, raising :class:`RowError` with the exact field (``chosen[2].role``) that is
wrong. They also split a shared prompt off a chosen/rejected pair that was stored without one.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NoReturn

from rlhf_lab.data.errors import Issues, fail

ROLES = ("system", "user", "assistant", "tool")
# ShareGPT and Anthropic HH name the speakers differently; both map onto the chat-template roles.
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", **{role: role for role in ROLES}}

# Which roles may follow a message with this role (_STARTS says which may come first).
_FOLLOWS = {
    "system": {"user"},
    "user": {"assistant"},
    "assistant": {"user", "tool"},
    "tool": {"assistant", "tool"},
}
_STARTS = {"conversation": {"system", "user"}, "prompt": {"system", "user"}, "completion": {"assistant"}}
_ENDS = {"conversation": "assistant", "prompt": "user", "completion": "assistant"}

_FIX_EMPTY = {
    "prompt": "put the prompt text in '{field}'",
    "chosen": "put the preferred response text in '{field}'",
    "rejected": "put the dispreferred response text in '{field}'",
}
_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):[ \t]?")

Messages = list[dict[str, str]]


def type_name(value: Any) -> str:
    return {
        str: "a string",
        list: "a list",
        dict: "an object",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def key(value: Any) -> str:
    """A hashable, order-stable identity for normalized messages (used to find duplicates)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def require_text(value: Any, field: str) -> str:
    """The value if it is a string with something in it; otherwise the precise complaint."""
    if value is None:
        fail(field, "is missing", f"add '{field}' to the row")
    if not isinstance(value, str):
        fail(field, f"is not a string (got {type_name(value)})", f"make '{field}' a string")
    if not value.strip():
        base = re.split(r"[\[.]", field, maxsplit=1)[0]
        fix = _FIX_EMPTY.get(base, "put the text in '{field}', or drop the row").format(field=field)
        fail(field, "is empty" if not value else "is only whitespace", fix)
    return value


def parse_messages(value: Any, field: str) -> Messages:
    """Check a list of role/content (or ShareGPT from/value) dicts; keep just role and content."""
    if value is None:
        fail(field, "is missing", f"add '{field}' to the row")
    if not isinstance(value, list):
        fail(
            field,
            f"is not a list of messages (got {type_name(value)})",
            f'give \'{field}\' as a string or as a list like [{{"role": "user", "content": "..."}}]',
        )
    if not value:
        fail(field, "is an empty list of messages", f"put at least one message in '{field}'")
    issues, messages = Issues(), []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            issues.add(
                where,
                f"is not a message object (got {type_name(message)})",
                'write each message as {"role": ..., "content": ...}',
            )
            continue
        # Columnar sources may carry both key pairs with one of them None.
        if message.get("role") is not None or message.get("content") is not None:
            role_key, content_key = "role", "content"
        elif message.get("from") is not None or message.get("value") is not None:
            role_key, content_key = "from", "value"
        else:
            issues.add(
                where,
                f"has keys {sorted(message)} instead of 'role' and 'content'",
                'write each message as {"role": ..., "content": ...}',
            )
            continue
        role = issues.attempt(_role, message.get(role_key), f"{where}.{role_key}")
        content = issues.attempt(require_text, message.get(content_key), f"{where}.{content_key}")
        if role is not None and content is not None:
            messages.append({"role": role, "content": content})
    issues.raise_if_any()
    return messages


def _role(value: Any, field: str) -> str:
    if value is None:
        fail(field, "is missing", f"give every message a role: one of {', '.join(ROLES)}")
    role = _ROLE_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
    if role is None:
        fail(
            field,
            f"has unknown role {value!r}",
            f"use one of: {', '.join(ROLES)} (ShareGPT 'human'/'gpt' and HH 'Human'/'Assistant' are mapped)",
        )
    return role


def _a(role: str) -> str:
    return f"an '{role}'" if role == "assistant" else f"a '{role}'"  # roles here are the four in ROLES


def check_order(messages: Messages, field: str, shape: str) -> Messages:
    """Check turn order for a whole ``conversation``, a ``prompt`` or a ``completion``."""
    previous = None
    for index, message in enumerate(messages):
        role = message["role"]
        allowed = _STARTS[shape] if previous is None else _FOLLOWS[previous]
        if shape == "completion":
            allowed = allowed - {"user", "system"}
        if role not in allowed:
            if shape == "completion" and role in ("user", "system"):
                problem = f"is {_a(role)} message, but a response holds only assistant and tool turns"
            elif previous is None:
                problem = f"is {_a(role)} message, but a {shape} must start with {' or '.join(sorted(allowed))}"
            else:
                problem = f"is {_a(role)} message right after {_a(previous)} message (turns must alternate)"
            fail(f"{field}[{index}]", problem, _ORDER_FIX[shape])
        previous = role
    if previous != _ENDS[shape]:
        wanted = "an assistant" if _ENDS[shape] == "assistant" else "a user"
        fail(
            field,
            f"ends with {_a(previous)} message, but a {shape} must end with {wanted} message",
            _ORDER_FIX[shape],
        )
    return messages


_ORDER_FIX = {
    "conversation": "order the turns as: optional system, then user and assistant alternating, "
    "ending with the assistant reply to learn",
    "prompt": "end the prompt with the user turn being answered; move assistant turns after it into the responses",
    "completion": "a response holds only assistant (and tool) turns; put earlier turns in 'prompt'",
}


def looks_like_hh(text: Any) -> bool:
    return isinstance(text, str) and bool(re.match(r"\s*Human:", text)) and "Assistant:" in text


def parse_hh(text: str, field: str, *, open_end: bool = False) -> Messages:
    """Parse an Anthropic HH transcript; ``open_end`` allows a trailing empty "Assistant:" cue."""
    parts = _HH_TURN.split(text.strip())
    if parts[0].strip():
        fail(
            field,
            "has text before the first 'Human:' turn",
            "start the transcript with '\\n\\nHuman: ' or give the row as messages",
        )
    turns = [("user" if parts[i] == "Human" else "assistant", parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    if open_end and len(turns) > 1 and turns[-1] == ("assistant", ""):
        turns.pop()
    for number, (role, content) in enumerate(turns, start=1):
        if not content:
            speaker = "Human" if role == "user" else "Assistant"
            fail(
                field,
                f"has an empty '{speaker}:' turn (turn {number})",
                "write the turn's text after its marker, or remove the empty turn",
            )
    return [{"role": role, "content": content} for role, content in turns]


def _string_or_list(value: Any, field: str) -> None:
    if value is not None and not isinstance(value, (str, list)):
        fail(
            field,
            f"is not a string or a list of messages (got {type_name(value)})",
            f'give \'{field}\' as a string or as a list like [{{"role": "user", "content": "..."}}]',
        )


def prompt_messages(value: Any, field: str = "prompt") -> Messages:
    """A prompt as messages ending in a user turn: from a string, an HH transcript or a list."""
    _string_or_list(value, field)
    if isinstance(value, list):
        return check_order(parse_messages(value, field), field, "prompt")
    text = require_text(value, field)
    if looks_like_hh(text):
        return check_order(parse_hh(text, field, open_end=True), field, "prompt")
    return [{"role": "user", "content": text}]


def completion_messages(value: Any, field: str, prompt: Messages | None = None) -> Messages:
    """A response as assistant message(s). A list that repeats ``prompt`` first has it removed,
    as in datasets that store the full conversation next to the prompt (ultrafeedback_binarized)."""
    _string_or_list(value, field)
    if not isinstance(value, list):
        return [{"role": "assistant", "content": require_text(value, field)}]
    messages = parse_messages(value, field)
    if prompt and messages[: len(prompt)] == prompt and len(messages) > len(prompt):
        messages = messages[len(prompt) :]
    return check_order(messages, field, "completion")


def split_shared_prefix(chosen: Messages, rejected: Messages) -> tuple[Messages, Messages, Messages]:
    """Split the longest shared opening of two conversations off as their prompt.

    The cut backs off to the last shared user turn, so the prompt ends with what is being
    answered and both remainders start with an assistant turn.
    """
    cut = 0
    while cut < min(len(chosen), len(rejected)) and chosen[cut] == rejected[cut]:
        cut += 1
    while cut > 0 and chosen[cut - 1]["role"] != "user":
        cut -= 1
    if cut == 0:
        no_prompt()
    issues = Issues()
    issues.attempt(check_order, chosen[:cut], "chosen", "prompt")
    for name, messages in (("chosen", chosen), ("rejected", rejected)):
        if len(messages) == cut:
            issues.add(
                name,
                "has nothing after the prompt it shares with the other response",
                f"add the {name} assistant reply after the last user turn",
            )
        else:
            issues.attempt(check_order, messages[cut:], name, "completion")
    issues.raise_if_any()
    return chosen[:cut], chosen[cut:], rejected[cut:]


def split_common_text(chosen: str, rejected: str) -> tuple[Messages, Messages, Messages]:
    """Split two plain strings at their longest common prefix, backed off to whitespace.

    This is TRL's ``extract_prompt`` for the standard format, except that the cut never falls
    inside a word ("... A: blue" / "... A: black" splits before "blue", not before "ue").
    """
    common = len(os.path.commonprefix([chosen, rejected]))
    cut = next((i for i in range(common - 1, -1, -1) if chosen[i].isspace()), 0)
    prompt, rest_chosen, rest_rejected = chosen[:cut].strip(), chosen[cut:].strip(), rejected[cut:].strip()
    if not prompt:
        no_prompt()
    issues = Issues()
    for name, rest in (("chosen", rest_chosen), ("rejected", rest_rejected)):
        if not rest:
            issues.add(
                name,
                "has nothing after the prompt it shares with the other response",
                f"add a 'prompt' field and put only the {name} response in '{name}'",
            )
    issues.raise_if_any()
    return (
        [{"role": "user", "content": prompt}],
        [{"role": "assistant", "content": rest_chosen}],
        [{"role": "assistant", "content": rest_rejected}],
    )


def no_prompt() -> NoReturn:
    fail(
        "prompt",
        "is missing and cannot be inferred: chosen and rejected share no prompt",
        "add a 'prompt' field, and keep only the responses in 'chosen' and 'rejected'",
    )
