"""Call `smcs serve` with the official `openai` client, as any OpenAI-compatible app would.

    smcs serve --pool examples/local_pool.yaml --bank BANK --api-key-env SMCS_API_KEY &
    SMCS_API_KEY=... .venv/bin/python examples/openai_client.py ["question"]

Options: --base-url (default http://127.0.0.1:8000/v1), --api-key (default $SMCS_API_KEY),
--model (default smcs). Shows a plain completion with the SMCS trace requested, and a streamed
one with token usage.
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="default: What is 12 times 7?")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default=os.environ.get("SMCS_API_KEY") or "no-key")
    parser.add_argument("--model", default="smcs")
    args = parser.parse_args()
    question = " ".join(args.question) or "What is 12 times 7? Reply with the number only."
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)

    print("models:", [m.id for m in client.models.list().data])

    completion = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": question}],
        max_tokens=64,
        extra_body={"smcs": {"trace": True}},  # the SMCS trace, as a top-level field
    )
    trace = (completion.model_extra or {})["smcs_trace"]
    print("answer:", completion.choices[0].message.content)
    print("referencers:", trace["referencers"], "aggregator:", trace["aggregator"])
    usage = completion.usage
    assert usage is not None
    print(f"usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens")

    stream = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": question}],
        max_tokens=64,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, total = "", 0
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            total = chunk.usage.total_tokens
    print("streamed:", text)
    print("streamed usage:", total, "tokens")


if __name__ == "__main__":
    main()
