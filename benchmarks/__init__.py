"""The benchmark harness: idemstore against raw aiobotocore and the Powertools utility.

Run with ``python -m benchmarks`` (or ``nox -s bench``); not part of the test
suite. Servers (the fake endpoint, moto, the latency proxy) and each contender
run in processes of their own, so a contender's CPU time is its own.
"""
