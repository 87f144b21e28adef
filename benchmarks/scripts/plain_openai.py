"""The plain loop for LLM generation: one process, asyncio and the ``openai`` package.

What a user writes without bulkinfer: read the Parquet input with pyarrow, send one chat (or
completion) request per row with ``AsyncOpenAI``, at most ``--concurrency`` in flight (a
semaphore), the SDK's own retries (``--max-retries``), write the texts as Parquet in input order.
Prints one ``BENCH {json}`` line: rows, failed rows, the job's seconds, requests a second, the
server's prompt and completion tokens and completion tokens a second.

    python benchmarks/scripts/plain_openai.py IN.parquet OUT_FOLDER \\
        --base-url http://127.0.0.1:8000/v1 --model NAME --prompt 'Summarize: {text}'

The key comes from ``$OPENAI_API_KEY`` (the SDK refuses to start without one: a local server
takes any, so ``--api-key-env`` defaults to a placeholder when the variable is unset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

T0 = time.time()


async def generate(args: argparse.Namespace, prompts: list[str]) -> tuple[list, dict]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=args.base_url,
        api_key=os.environ.get(args.api_key_env) or "unused",
        max_retries=args.max_retries,
        timeout=args.timeout,
    )
    slots = asyncio.Semaphore(args.concurrency)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "failed": 0}

    async def one(prompt: str) -> str | None:
        async with slots:
            try:
                if args.endpoint == "chat":
                    reply = await client.chat.completions.create(
                        model=args.model,
                        messages=[{"role": "user", "content": prompt}],
                        max_tokens=args.max_tokens,
                        temperature=args.temperature,
                    )
                    text = reply.choices[0].message.content
                else:
                    reply = await client.completions.create(
                        model=args.model,
                        prompt=prompt,
                        max_tokens=args.max_tokens,
                        temperature=args.temperature,
                    )
                    text = reply.choices[0].text
            except Exception:  # the plain loop keeps going: a failed row stays empty
                usage["failed"] += 1
                return None
        if reply.usage is not None:
            usage["prompt_tokens"] += reply.usage.prompt_tokens
            usage["completion_tokens"] += reply.usage.completion_tokens
        return text

    try:
        texts = await asyncio.gather(*(one(p) for p in prompts))
    finally:
        await client.close()
    return texts, usage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", default="{text}", help="template over the row's columns")
    parser.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    job_start = time.time()
    table = pq.read_table(args.input)
    rows = table.to_pylist()
    prompts = [args.prompt.format_map(row) for row in rows]
    texts, usage = asyncio.run(generate(args, prompts))
    os.makedirs(args.output, exist_ok=True)
    pq.write_table(
        table.append_column("output", pa.array(texts, pa.string())), f"{args.output}/0.parquet"
    )
    job_s = time.time() - job_start
    print(
        "BENCH "
        + json.dumps(
            {
                "rows": len(rows),
                "failed": usage["failed"],
                "job_s": job_s,
                "requests_per_s": len(rows) / job_s if job_s else None,
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "completion_tokens_per_s": usage["completion_tokens"] / job_s if job_s else None,
                "first_row_at": time.time(),  # one file, written at the end
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
