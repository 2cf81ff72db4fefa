"""Running a command the way the integration proofs do: to its end, output captured."""

import subprocess
from collections.abc import Sequence
from pathlib import Path


def run_captured(
    args: Sequence[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``cwd`` for at most ``timeout`` seconds, its output captured as text.

    A failing command does not raise: each proof asserts on the return code itself.
    """
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
