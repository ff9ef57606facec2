"""farebox's benchmark: farebox beside direct calls (and LiteLLM Proxy) on one machine, in one run.

``python -m bench`` starts the fake upstream, farebox in front of it (recording, with a hard
budget that is never exhausted) and, with ``--compare-litellm``, LiteLLM Proxy routed to the
same fake upstream; drives them in interleaved, repeated runs; and writes a JSON report and a
Markdown table. ``python -m bench --smoke`` is the few-seconds version CI runs.

Modules: ``run`` (command line and the order of runs), ``targets`` (starting and stopping the
servers, CPU and memory sampling), ``load`` (wrk for non-streamed load, an asyncio client for
streams and as a fallback), ``pieces`` (timings of what farebox adds, each on its own),
``report`` (medians, ratios, JSON and Markdown), ``rediscpu`` (``--redis-cpu``: Redis's own
CPU and commands per request behind N farebox processes), ``keycheck`` (``python -m
bench.keycheck``: the CPU a farebox key's check adds to a request).
"""
