"""The layout holds: the layer order and no import cycles (import-linter, deferred imports counted), and a run
reads and converts its data files once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from tests.helpers import memorizable_rows, write_config
from tunelab import config, train
from tunelab.data import rows as rows_module

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_layers_and_no_cycles_are_kept():
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 kept, 0 broken" in done.stdout


def test_a_run_reads_its_data_once_and_warns_about_skipped_rows_once(tmp_path, tiny_model_dir, monkeypatch, caplog):
    rows = [*memorizable_rows(), {"prompt": "no completion here"}]
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"train": str(train_file), "val_size": 2, "on_bad_rows": "skip", "max_skip_fraction": 0.5}
    cfg_path = write_config(tmp_path, tiny_model_dir, train={"max_steps": 1}, data=data)
    reads: list[str] = []
    real_read = rows_module.read

    def counting_read(path, role="train"):
        reads.append(str(path))
        return real_read(path, role)

    monkeypatch.setattr(rows_module, "read", counting_read)
    with caplog.at_level(logging.WARNING):
        result = train.run(config.load(cfg_path, ["forgetting.enabled=false"]))
    assert reads == [str(train_file)]
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
        "skipped 1 bad row(s): {'missing_field': 1}"
    ]
    assert result.metrics["data"]["skipped"] == {"missing_field": 1}
