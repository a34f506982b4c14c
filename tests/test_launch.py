"""`tunelab train` re-runs itself on tcmalloc (the real command in a child process, the real library), stays on
the system malloc when told to, and names a bad TUNELAB_ALLOCATOR before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_config
from tunelab import launch
from tunelab.errors import ConfigError

TUNELAB = Path(sys.executable).parent / "tunelab"


# .ci/run sets this: CI installs tcmalloc and runs every test, so there a missing library fails instead of skipping.
REQUIRED = os.environ.get("TUNELAB_REQUIRE_TCMALLOC") == "1"
MISSING = "tcmalloc is not installed (apt-get install libtcmalloc-minimal4; `make` does it when run as root)"


def tcmalloc() -> str:
    library = launch.find_tcmalloc()
    if library is None:
        if REQUIRED:
            pytest.fail(MISSING)
        pytest.skip(f"{MISSING}: the tcmalloc tests did not run")
    return library


def train_in_child(tmp_path: Path, model_dir: Path, setting: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (launch.SETTING, launch.PRELOADED, "LD_PRELOAD")}
    if setting is not None:
        env[launch.SETTING] = setting
    cfg = write_config(tmp_path, model_dir, train={"max_steps": 1}, model={"name": str(model_dir)})
    command = [str(TUNELAB), "train", str(cfg), "forgetting.enabled=false"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("setting", [None, "system"])
def test_train_runs_on_tcmalloc_unless_told_not_to(tmp_path, tiny_model_dir, setting):
    tcmalloc()
    done = train_in_child(tmp_path, tiny_model_dir, setting)
    assert done.returncode == 0, done.stderr[-3000:]
    malloc = json.loads((tmp_path / "run" / "versions.json").read_text())["malloc"]
    if setting is None:
        assert malloc.startswith("tcmalloc (") and "libtcmalloc" in malloc
    else:
        assert malloc == "system"
    assert "large alloc" not in done.stderr


def test_a_missing_library_is_named_before_anything_loads(tmp_path, tiny_model_dir):
    done = train_in_child(tmp_path, tiny_model_dir, str(tmp_path / "libnothing.so"))
    assert done.returncode == 2
    assert "TUNELAB_ALLOCATOR" in done.stdout + done.stderr and "no such file" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_preload_env_keeps_other_preloads_and_runs_once():
    library = tcmalloc()
    env = launch.preload_env({"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"})
    assert env is not None and env["LD_PRELOAD"] == f"{library} /opt/other.so" and env["PATH"] == "/bin"
    assert env[launch.PRELOADED] == library
    assert launch.preload_env(env) is None  # the re-run process does not re-run again
    assert launch.preload_env({launch.SETTING: "system"}) is None
    assert launch.preload_env({"LD_PRELOAD": library}) is None  # preloaded by the user already
    with pytest.raises(ConfigError, match="no such file"):
        launch.preload_env({launch.SETTING: "/no/such/libmalloc.so"})
