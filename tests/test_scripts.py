"""The recipes under scripts/ check their arguments before they install or run anything."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize(("parts", "message"), [(["bogus"], "unknown part 'bogus'"), ([], "usage:")])
def test_gpu_session_checks_its_parts_before_doing_anything(parts: list[str], message: str, tmp_path: Path) -> None:
    script = SCRIPTS / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    result = subprocess.run(["bash", str(script), *parts], capture_output=True, text=True, check=False,
                            env={**os.environ, "OUT": str(tmp_path / "out")})
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()  # nothing installed, nothing run


def test_keys_measurements_check_their_parts_before_running_any(tmp_path: Path) -> None:
    script = SCRIPTS / "keys_measurements.sh"
    result = subprocess.run(["bash", str(script), "speed", "bogus"], capture_output=True, text=True, check=False,
                            env={**os.environ, "OUT": str(tmp_path / "out")})
    assert result.returncode == 2 and "unknown part 'bogus'" in result.stderr
    assert not any((tmp_path / "out").glob("speed-*.json"))  # speed, named first, did not run
