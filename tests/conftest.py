import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real `mvdeploy` in a subprocess: exit codes and stderr exactly as a user sees them."""
    return subprocess.run([sys.executable, "-m", "mobilevit_deploy.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
