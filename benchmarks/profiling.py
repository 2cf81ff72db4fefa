"""Where a contender's client CPU goes: its calls under cProfile, against the fake endpoint.

    python -m benchmarks.profiling [--contender idemstore] [--calls 2000] [--top 30]

Runs ``calls`` fresh calls then the same payloads again (duplicates), one at a
time, and prints the functions with the most own time and the most cumulative
time. The fake endpoint runs in another process, so only client work shows.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
import uuid
import warnings

from benchmarks.contenders import CONTENDER_NAMES, make_contender, order
from benchmarks.processes import ServerProcess
from benchmarks.run import WORKER_ENVIRONMENT


async def profile(contender_name: str, url: str, calls: int) -> tuple[cProfile.Profile, float]:
    contender = make_contender(contender_name)
    await contender.open(url)
    tag = uuid.uuid4().hex[:8]
    try:
        for i in range(50):
            await contender.call(order(f"{tag}-warm-{i}"))
        payloads = [order(f"{tag}-{i}") for i in range(calls)]
        profiler = cProfile.Profile()
        cpu = time.process_time()
        profiler.enable()
        for payload in payloads + payloads:
            await contender.call(payload)
        profiler.disable()
        return profiler, (time.process_time() - cpu) / (2 * calls)
    finally:
        await contender.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contender", default="idemstore", choices=CONTENDER_NAMES)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime,cumulative")
    args = parser.parse_args()
    os.environ.update(WORKER_ENVIRONMENT)
    warnings.simplefilter("ignore")
    with ServerProcess("benchmarks.fake_dynamo") as fake:
        profiler, cpu_per_call = asyncio.run(profile(args.contender, fake.url, args.calls))
    print(f"{args.contender}: {cpu_per_call * 1e6:.0f} µs CPU per call under the profiler")
    for key in args.sort.split(","):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
