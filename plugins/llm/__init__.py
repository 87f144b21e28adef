"""Generation through OpenAI-compatible HTTP endpoints, independent of the plugin contract.

The ``openai_chat`` predictor is assembled from these modules; each works on its own and is
tested against a real server (``transformers serve``) behind a fault-injecting proxy.

- :mod:`.params`     the predictor's validated params (``OpenAIChatParams``)
- :mod:`.template`   prompt templates over a row's columns
- :mod:`.protocol`   request bodies for ``/chat/completions`` and ``/completions``; replies
- :mod:`.retry`      which failures are retried, backoff with jitter, ``Retry-After``
- :mod:`.limits`     requests/tokens per minute: a token bucket, local or shared by a Ray actor
- :mod:`.client`     many requests at once from one worker (``httpx2.AsyncClient``), per-row
                     results in input order, counters
- :mod:`.replay`     results kept for the guard's row-by-row second call (no request twice)
- :mod:`.structured` JSON-schema replies validated and split into columns
- :mod:`.preflight`  is the server there, before any row is spent
- :mod:`.estimate`   prompt tokens and cost of a dry run
- :mod:`.report`     the end-of-job line from the workers' counters

Nothing here imports torch, transformers or Ray at module import time.
"""
