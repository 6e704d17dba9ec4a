"""A run with one model step, used by test_durable.py in child processes (run as a script).

usage: python replay_flow.py JOURNAL BASE_URL RUN_ID [--kill]

With --kill the process SIGKILLs itself right after the model step is journaled; run again without it, the
run resumes and prints its result.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from corral.durable import RunContext, Runtime, SqliteJournal
from corral.models import JournaledModel, OpenAIModel, RetryPolicy, UserMessage

KILL = "--kill" in sys.argv


async def flow(ctx: RunContext, base_url: str) -> str:
    model = JournaledModel(OpenAIModel("fake", base_url=base_url, retry=RetryPolicy(attempts=1)), ctx)
    response = await model.request([UserMessage(content="hello")])
    if KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    after = await ctx.step("after", lambda: "done")
    await model.aclose()
    return f"{response.message.content}|{response.usage.input_tokens}|{after}"


async def main() -> None:
    journal_path, base_url, run_id = sys.argv[1:4]
    runtime = Runtime(SqliteJournal(journal_path))
    print(await runtime.run(flow, base_url, run_id=run_id))


if __name__ == "__main__":
    asyncio.run(main())
