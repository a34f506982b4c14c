"""Compute and energy per run (tunelab/energy.py): codecarbon really measuring this machine offline, its failures
kept out of the run, every process's report combined, and the one-line description's units."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import torch

from tunelab import energy
from tunelab.config.distributed import EnergyConfig

CPU = torch.device("cpu")
# Each method methods_of can name for a CPU (RAPL where the counters are readable, else the TDP times the load).
CPU_METHOD = re.compile(r"RAPL|TDP [\d.]+ W x load|constant [\d.]+ W|constant|Power Gadget|powermetrics|PMIC")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (a connection attempt fails, so codecarbon reaching out would leave energy unmeasured), and a
    working directory that shows any file codecarbon writes."""

    def refuse(*args, **kwargs):
        raise OSError("tests: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def measure_for(seconds: float, settings: EnergyConfig) -> dict:
    meter = energy.start(settings, CPU, measure=True)
    meter.starter.join(energy.START_WAIT_SECONDS)  # codecarbon's set-up (1.5-2 s here), then the measured interval
    time.sleep(seconds)
    return meter.stop()


def test_codecarbon_measures_the_machine_offline_silently_and_writes_nothing(offline, capfd):
    report = measure_for(1.0, EnergyConfig(country="USA"))
    assert "unmeasured" not in report, report["unmeasured"]
    json.dumps(report)  # goes into metrics.json as it is
    assert report["device"] == f"cpu: {energy.cpu_model()}" and report["measuring"] is True
    assert 1.0 / 3600 < report["hours"] < 60 / 3600
    assert 0.9 / 3600 < report["measured_hours"] <= report["hours"]
    kwh = report["energy_kwh"]
    assert kwh["cpu"] > 0 and kwh["ram"] > 0  # even idle, TDP x load counts a tenth of the TDP; RAPL a real reading
    assert kwh["total"] == pytest.approx(kwh["cpu"] + kwh["gpu"] + kwh["ram"])
    assert 0.1 < report["co2_kg"] / kwh["total"] < 1.0  # the US grid: a few hundred g CO2 per kWh
    assert report["grid"] == "United States" and report["country"] == "USA"
    methods = report["methods"]
    assert CPU_METHOD.fullmatch(methods["cpu"]) and methods["ram"] == "estimate"
    if not torch.cuda.is_available():
        assert methods["gpu"] == "none"
    captured = capfd.readouterr()
    assert "codecarbon" not in captured.out + captured.err  # it logs every reading by default
    assert list(offline.iterdir()) == []  # no emissions.csv


def test_a_country_codecarbon_has_no_data_for_counts_at_the_world_average(offline):
    compute = energy.combine([measure_for(0.2, EnergyConfig(country="XYZ"))])
    assert compute["grid"] == "world average" and compute["co2_kg"] > 0
    assert "world-average grid" in energy.describe(compute)


def test_codecarbon_failing_leaves_the_device_hours_and_says_why(offline, monkeypatch):
    # A codecarbon config pointing at a folder that is gone: its constructor raises and swallows the error.
    monkeypatch.setenv("CODECARBON_OUTPUT_DIR", str(offline / "gone"))
    meter = energy.start(EnergyConfig(), CPU, measure=True)
    time.sleep(0.1)
    report = meter.stop()
    assert "energy_kwh" not in report and report["hours"] > 0.1 / 3600
    assert "OSError" in report["unmeasured"] and "gone" in report["unmeasured"]
    compute = energy.combine([report])
    assert compute["energy_kwh"] is None and compute["unmeasured"] == report["unmeasured"]
    assert energy.describe(compute).endswith(f"energy not measured: {report['unmeasured']}")


def test_disabled_or_another_process_measuring_only_times_the_device():
    off = energy.start(EnergyConfig(enabled=False), CPU, measure=True)
    other = energy.start(EnergyConfig(), CPU, measure=False)
    assert off.starter is None and other.starter is None  # codecarbon never started
    assert off.stop()["unmeasured"] == "energy.enabled is false"
    assert other.stop()["unmeasured"] == "another process measures this machine"


def test_a_hung_or_raising_codecarbon_is_waited_for_only_so_long():
    began = time.perf_counter()
    hung = energy.within(0.2, "stop", lambda: time.sleep(5) or {})
    assert hung == {"unmeasured": "codecarbon's stop took over 0.2 s"}
    assert time.perf_counter() - began < 2

    def broken() -> dict:
        raise RuntimeError("no RAPL permission")

    assert energy.within(5, "stop", broken) == {"unmeasured": "codecarbon stop: RuntimeError: no RAPL permission"}


def machine(kwh: float, co2: float, methods: dict, device: str = "cpu: AMD EPYC", hours: float = 2.0) -> dict:
    """A measuring process's report: energy split 50/10/40 over cpu, gpu, ram."""
    parts = {"cpu": 0.5 * kwh, "gpu": 0.1 * kwh, "ram": 0.4 * kwh, "total": kwh}
    return {
        "device": device,
        "hours": hours,
        "measuring": True,
        "country": "USA",
        "energy_kwh": parts,
        "co2_kg": co2,
        "methods": methods,
        "grid": "United States",
        "measured_hours": hours * 0.99,
    }


def helper(device: str = "cpu: AMD EPYC", hours: float = 1.5) -> dict:
    return {"device": device, "hours": hours, "measuring": False, "country": "USA", "unmeasured": "another process"}


RAPL = {"cpu": "RAPL", "gpu": "NVML", "ram": "estimate"}
TDP = {"cpu": "TDP 8 W x load", "gpu": "NVML", "ram": "estimate"}


def test_combine_sums_device_hours_and_energy_over_processes_and_machines():
    compute = energy.combine([machine(3.0, 1.2, RAPL), helper(), machine(1.0, 0.4, TDP, hours=2.5), helper()])
    json.dumps(compute)
    assert compute["processes"] == 4 and compute["wall_hours"] == 2.5
    assert compute["devices"] == {"cpu: AMD EPYC": 4}
    assert compute["device_hours"] == {"cpu: AMD EPYC": pytest.approx(2.0 + 1.5 + 2.5 + 1.5)}
    assert compute["energy_kwh"] == pytest.approx({"cpu": 2.0, "gpu": 0.4, "ram": 1.6, "total": 4.0})
    assert compute["co2_kg"] == pytest.approx(1.6)
    assert compute["methods"] == {"cpu": "RAPL + TDP 8 W x load", "gpu": "NVML", "ram": "estimate"}
    assert compute["country"] == "USA" and compute["grid"] == "United States"
    assert compute["measured_share"] == pytest.approx(0.99)
    assert "unmeasured" not in compute and "partial" not in compute


def test_combine_says_when_a_machine_or_every_machine_went_unmeasured():
    failed = {**helper(), "measuring": True, "unmeasured": "codecarbon did not start: PermissionError"}
    partial = energy.combine([machine(1.0, 0.4, RAPL), failed])
    assert partial["energy_kwh"]["total"] == 1.0
    assert partial["partial"] == "1 of 2 machines not measured: codecarbon did not start: PermissionError"
    assert partial["partial"] in energy.describe(partial)
    none = energy.combine([failed, helper()])
    assert none["energy_kwh"] is None and none["co2_kg"] is None
    assert none["unmeasured"] == failed["unmeasured"]
    with pytest.raises(ValueError, match="at least one"):
        energy.combine([])


def test_describe_picks_units_for_tiny_and_large_runs():
    tiny = energy.combine([machine(0.0000186, 0.0000069, TDP, hours=0.0014), helper(hours=0.0014)])
    assert energy.describe(tiny) == (
        "0.0028 device-hours (cpu: AMD EPYC x2), 0.019 Wh, 0.0069 g CO2 "
        "(cpu: TDP 8 W x load, gpu: NVML, ram: estimate; USA grid)"
    )
    gpus = [machine(1530.0, 612.0, RAPL, device="NVIDIA H100 80GB HBM3", hours=96.0) for _ in range(8)]
    large = energy.describe(energy.combine(gpus))
    assert large.startswith("768 device-hours (NVIDIA H100 80GB HBM3 x8), 12 MWh, 4.9 t CO2 (cpu: RAPL, gpu: NVML")
    middle = energy.describe(energy.combine([machine(2.5, 0.95, RAPL, hours=0.5)]))
    assert "0.50 device-hours (cpu: AMD EPYC), 2.5 kWh, 950 g CO2" in middle


def test_describe_says_what_was_not_covered():
    short = {**machine(0.00001, 0.000004, TDP, hours=0.0014), "measured_hours": 0.0007}
    assert "energy over the last 50% of the run" in energy.describe(energy.combine([short]))
    unmeasured_gpu = machine(2.0, 0.8, {**RAPL, "gpu": "none"}, device="NVIDIA A100-SXM4-40GB")
    assert "gpu: not measured" in energy.describe(energy.combine([unmeasured_gpu]))
    cpu_only = machine(2.0, 0.8, {**RAPL, "gpu": "none"})
    assert "gpu" not in energy.describe(energy.combine([cpu_only]))
