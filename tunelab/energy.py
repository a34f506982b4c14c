"""Compute and energy per training run: device-hours by device type, kWh and estimated CO2 (codecarbon, offline).

    meter = energy.start(cfg.energy, device, measure=is_local_main)   # as the run begins, in every process
    report = meter.stop()                                             # as it ends: this process's report
    compute = energy.combine(reports_of_every_process)                # metrics.json "compute"
    print(energy.describe(compute))                                   # one line: summary, `tunelab compare`

Every process times its own device. One process per machine (its local main) also runs codecarbon's
OfflineEmissionsTracker over the whole machine ("machine" mode), so a machine's energy is counted once. Each report
says how codecarbon measured each part: RAPL (the Linux CPU energy counters; usually readable by root only), NVML
(NVIDIA's GPU energy counter), "TDP x load" (the CPU's rated power scaled by its load, when there is no counter;
4 W per thread for a CPU missing from codecarbon's table), constant (half the TDP), estimate (RAM, from its size).
CO2 is the energy times the grid's intensity from codecarbon's offline table (the world average for a country it
lacks). Nothing goes over the network.

Measuring must never stop or hang a run: codecarbon starts in a background thread, every wait on it is bounded, and
whatever goes wrong (no RAPL permission, an unknown CPU, ...) becomes the report's `unmeasured` reason while the
device-hours stay. Measured on a 5-second run on this project's 2-core CPU machine (no RAPL): start() returns in
under 10 ms and stop() in 50-150 ms; in between, codecarbon's import (75 ms) and set-up (matching the CPU's name in
its TDP table) took 1.7-2 s of wall time and 0.55 s of CPU in the background, so it measured the last 3.2-3.4 s.
"""

from __future__ import annotations

import logging
import math
import platform
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from tunelab.config.distributed import EnergyConfig

# How often codecarbon reads the energy counters. RAPL's wrap at max_energy_range_uj (262 kJ on Intel packages: ~17
# min at 250 W) and codecarbon corrects one wrap per reading, so once a minute is safe. NVML's GPU energy counter is
# 64-bit, TDP x load is sampled every second by codecarbon's own monitor whatever this is, and stop() takes a last
# reading, so a 5-second run is covered as well as a week-long one.
MEASURE_SECONDS = 60
# Bounds on waiting for codecarbon (its set-up took 2 s here, its stop 0.15 s); past them the run goes on without.
START_WAIT_SECONDS = 60
STOP_WAIT_SECONDS = 30
PARTS = ("cpu", "gpu", "ram")
# codecarbon's CPU modes (codecarbon/external/hardware.py, CPU._mode) by what they measure with.
CPU_METHODS = {
    "intel_rapl": "RAPL",
    "windows_emi": "RAPL",
    "cpu_load": "TDP x load",
    "constant": "constant",
    "intel_power_gadget": "Power Gadget",
}
GPU_METHODS = {"NvidiaGPUDevice": "NVML", "AMDGPUDevice": "AMD SMI"}


class CodecarbonLog(logging.Filter):
    """Keeps codecarbon's log off the console (it logs every reading, and each tracker re-adds a console handler, so
    a filter on its logger holds the records back, not a handler); its recent warnings give the reason it failed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: deque[tuple[int, logging.LogRecord]] = deque(maxlen=50)
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.count += 1
            self.records.append((self.count, record))
        return False

    def reason_since(self, mark: int) -> str:
        """What went wrong after `mark`: the first exception codecarbon swallowed (the cause; later ones follow from
        it), else its last error or warning."""
        recent = [record for number, record in self.records if number > mark]
        for record in recent:
            if record.exc_info and record.exc_info[1] is not None:
                return error_text(record.exc_info[1])
        for level in (logging.ERROR, logging.WARNING):
            found = [r for r in recent if r.levelno >= level]
            if found:
                return found[-1].getMessage().strip().splitlines()[0]
        return "no reason logged"


CODECARBON_LOG = CodecarbonLog()


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().splitlines()[0]


@dataclass
class Meter:
    """One process's device time, and its machine's energy when this process measures it (see start)."""

    device: str
    settings: EnergyConfig
    measuring: bool
    began: float = field(default_factory=time.perf_counter)
    tracker: Any = None
    problem: str | None = None
    starter: threading.Thread | None = None
    abandoned: bool = False
    log_mark: int = 0
    report: dict[str, Any] | None = None
    gpus: int | None = None  # the machine's GPUs this run uses (its processes'): the first N; None: every one

    def stop(self) -> dict[str, Any]:
        """This process's report (JSON-serialisable): device, hours, and the energy it measured or why not. The
        first call ends the measurement; later calls return the same report."""
        if self.report is None:
            self.report = self.ended()
        return self.report

    def ended(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "device": self.device,
            "hours": (time.perf_counter() - self.began) / 3600,
            "measuring": self.measuring,
            "country": self.settings.country,
        }
        if self.settings.region:
            report["region"] = self.settings.region
        if not self.settings.enabled:
            return report | {"unmeasured": "energy.enabled is false"}
        if not self.measuring:
            return report | {"unmeasured": "another process measures this machine"}
        return report | self.measured()

    def measured(self) -> dict[str, Any]:
        """The machine's energy from codecarbon, or {"unmeasured": why}."""
        if self.starter is not None:
            self.starter.join(START_WAIT_SECONDS)
            if self.starter.is_alive():
                self.abandoned = True  # the starter stops the tracker itself should it start later
                return {"unmeasured": f"codecarbon did not start within {START_WAIT_SECONDS} s"}
        if self.tracker is None:
            return {"unmeasured": self.problem or "codecarbon did not start"}
        return within(STOP_WAIT_SECONDS, "stop", lambda: tracker_energy(self.tracker, self.log_mark))

    def begin_tracking(self) -> None:
        """In the starter thread: codecarbon's tracker, started, or the reason it is not."""
        try:
            from codecarbon import OfflineEmissionsTracker  # 75 ms; only in the one process per machine that measures

            tracker = OfflineEmissionsTracker(
                country_iso_code=self.settings.country,
                region=self.settings.region,
                project_name="tunelab",
                measure_power_secs=MEASURE_SECONDS,
                tracking_mode="machine",
                output_methods=[],  # nothing written or sent (save_to_file=False, without its deprecation warning)
                emissions_endpoint=None,
                electricitymaps_api_token=None,
                allow_multiple_runs=True,  # its lock file would also take over SIGINT/SIGTERM
                # `--nproc 2` on an 8-GPU machine runs on GPUs 0 and 1: count those, not all eight.
                **({"gpu_ids": list(range(self.gpus))} if self.gpus else {}),
                log_level="warning",
            )
            tracker.start()
        except BaseException as error:  # in a thread of its own: nothing above to hand it to
            self.problem = f"codecarbon: {error_text(error)}"
            return
        # start() swallows its own exceptions (codecarbon's @suppress): a tracker that failed has no start time.
        if getattr(tracker, "_start_time", None) is None:
            self.problem = f"codecarbon did not start: {CODECARBON_LOG.reason_since(self.log_mark)}"
            return
        self.tracker = tracker
        if self.abandoned:
            tracker.stop()


def start(settings: EnergyConfig, device: torch.device, measure: bool, gpus: int | None = None) -> Meter:
    """Begin timing this process's `device`; with `measure` (one process per machine) and settings.enabled, also
    begin measuring the whole machine's energy with codecarbon, offline. Never raises for codecarbon's sake."""
    meter = Meter(device_name(device), settings, measuring=measure, gpus=gpus)
    if settings.enabled and measure:
        quiet_codecarbon()
        meter.log_mark = CODECARBON_LOG.count
        meter.starter = threading.Thread(target=meter.begin_tracking, name="tunelab-energy-start", daemon=True)
        meter.starter.start()
    return meter


def quiet_codecarbon() -> None:
    logger = logging.getLogger("codecarbon")
    if CODECARBON_LOG not in logger.filters:
        logger.addFilter(CODECARBON_LOG)


def within(seconds: float, what: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """work() in a daemon thread, waited for at most `seconds`: its result, or {"unmeasured": why}."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result.update(work())
        except BaseException as error:  # in a thread of its own: nothing above to hand it to
            result.update(unmeasured=f"codecarbon {what}: {error_text(error)}")

    thread = threading.Thread(target=run, name=f"tunelab-energy-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    return result if not thread.is_alive() else {"unmeasured": f"codecarbon's {what} took over {seconds} s"}


def tracker_energy(tracker: Any, log_mark: int) -> dict[str, Any]:
    """Stop codecarbon's tracker and read what it measured: kWh per part, kg CO2, methods, grid."""
    tracker.stop()
    data = getattr(tracker, "final_emissions_data", None)  # set only when stop() succeeded (it swallows errors)
    if data is None:
        return {"unmeasured": f"codecarbon did not stop cleanly: {CODECARBON_LOG.reason_since(log_mark)}"}
    parts = {"cpu": data.cpu_energy, "gpu": data.gpu_energy, "ram": data.ram_energy}
    return {
        "energy_kwh": parts | {"total": data.energy_consumed},
        "co2_kg": data.emissions,
        "methods": methods_read(tracker),
        "grid": data.country_name or "world average",  # codecarbon has no data for the country
        "measured_hours": data.duration / 3600,
    }


def methods_read(tracker: Any) -> dict[str, str]:
    """methods_of the tracker's hardware, or "unknown" should codecarbon's internals have moved."""
    try:
        return methods_of(tracker._hardware)
    except Exception as error:
        return dict.fromkeys(PARTS, f"unknown ({error_text(error)})")


def methods_of(hardware: list[Any]) -> dict[str, str]:
    """How codecarbon measured each part, read from the hardware objects it chose (codecarbon/core/
    resource_tracker.py): RAPL or NVML counters, or an estimate; "none" for a part it did not find."""
    methods = dict.fromkeys(PARTS, "none")
    for part in hardware:
        kind = type(part).__name__
        if kind == "CPU":
            methods["cpu"] = cpu_method(part._mode, part._tdp)
        elif kind == "GPU":
            names = {GPU_METHODS.get(type(d).__name__, type(d).__name__) for d in part.devices.devices}
            methods["gpu"] = " + ".join(sorted(names)) or "none"
        elif kind == "RAM":
            methods["ram"] = "estimate" if part._force_ram_power is None else f"given {part._force_ram_power:g} W"
        elif kind in ("AppleSiliconChip", "Raspberry"):
            methods[part.chip_part.lower()] = "powermetrics" if kind == "AppleSiliconChip" else "PMIC"
    return methods


def cpu_method(mode: str, tdp: float | None) -> str:
    name = CPU_METHODS.get(mode, mode)
    if mode == "cpu_load" and tdp:
        return f"TDP {tdp:g} W x load"
    if mode == "constant" and tdp:
        return f"constant {tdp / 2:g} W"  # codecarbon's constant mode: half the TDP
    return name


def device_name(device: torch.device) -> str:
    """The device type a run's hours count against: the GPU's name, or "cpu: <the CPU's model>"."""
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except Exception as error:  # the run itself will say what is wrong with the device
            return f"cuda ({error_text(error)})"
    if device.type in ("cpu", "mps"):
        return f"{device.type}: {cpu_model()}"
    return device.type


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's `compute` from every process's report: device-hours per device type summed, energy and CO2 summed
    over the machines measured, and why energy is missing (`unmeasured`) or incomplete (`partial`)."""
    if not reports:
        raise ValueError("combine() needs at least one process's report")
    devices = Counter(r["device"] for r in reports)
    device_hours: dict[str, float] = {}
    for r in reports:
        device_hours[r["device"]] = device_hours.get(r["device"], 0.0) + r["hours"]
    measured = [r for r in reports if "energy_kwh" in r]
    compute: dict[str, Any] = {
        "processes": len(reports),
        "wall_hours": max(r["hours"] for r in reports),
        "devices": dict(devices),
        "device_hours": device_hours,
        **energy_sums(measured),
        "country": (measured or reports)[0]["country"],
    }
    failed = [r["unmeasured"] for r in reports if r.get("measuring") and "energy_kwh" not in r]
    if not measured:
        reasons = failed or [r["unmeasured"] for r in reports if "unmeasured" in r] or ["no process measured"]
        compute["unmeasured"] = reasons[0]
    elif failed:
        compute["partial"] = f"{len(failed)} of {len(failed) + len(measured)} machines not measured: {failed[0]}"
    return compute


def energy_sums(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """kWh per part and CO2 summed over the machines measured, and each part's methods and grids (all distinct)."""
    if not measured:
        return {"energy_kwh": None, "co2_kg": None, "methods": {}, "grid": None, "measured_share": None}
    kwh = {key: sum(r["energy_kwh"][key] for r in measured) for key in (*PARTS, "total")}
    methods = {part: " + ".join(dict.fromkeys(r["methods"][part] for r in measured)) for part in PARTS}
    return {
        "energy_kwh": kwh,
        "co2_kg": sum(r["co2_kg"] for r in measured),
        "methods": methods,
        "grid": " + ".join(dict.fromkeys(r["grid"] for r in measured)),
        # codecarbon measures from when its set-up ends (2 s after start() here): all but a sliver of a long run,
        # two thirds of a 5-second one. The least covered machine's share.
        "measured_share": min(min(r["measured_hours"] / r["hours"], 1.0) if r["hours"] else 1.0 for r in measured),
    }


def describe(compute: dict[str, Any]) -> str:
    """One line, e.g. "0.0028 device-hours (cpu: AMD EPYC x2), 0.012 Wh, 0.0048 g CO2 (cpu: TDP 8 W x load,
    ram: estimate; USA grid)"."""
    devices = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in compute["devices"].items())
    hours = sum(compute["device_hours"].values())
    line = f"{number(hours)} device-hours ({devices})"
    if compute.get("energy_kwh") is None:
        return f"{line}; energy not measured: {compute.get('unmeasured', 'no reason recorded')}"
    kwh, co2_kg = compute["energy_kwh"]["total"], compute["co2_kg"]
    energy = scaled(kwh * 1000, ("Wh", "kWh", "MWh"))
    co2 = scaled(co2_kg * 1000, ("g", "kg", "t"))
    methods = ", ".join(f"{part}: {how}" for part, how in compute["methods"].items() if how != "none")
    if compute["methods"].get("gpu") == "none" and any(not d.startswith(("cpu:", "mps:")) for d in compute["devices"]):
        methods += ", gpu: not measured"
    grid = "world-average grid" if compute["grid"] == "world average" else f"{compute['country']} grid"
    line = f"{line}, {energy}, {co2} CO2 ({methods}; {grid})"
    if compute["measured_share"] < 0.9:
        line += f"; energy over the last {compute['measured_share']:.0%} of the run (codecarbon's start-up)"
    return f"{line}; {compute['partial']}" if compute.get("partial") else line


def scaled(value: float, units: tuple[str, str, str]) -> str:
    """`value` in the first unit, shown in whichever of the three (each 1000x the last) reads best."""
    for unit in units[:-1]:
        if value < 1000:
            return f"{number(value)} {unit}"
        value /= 1000
    return f"{number(value)} {units[-1]}"


def number(value: float) -> str:
    """Two significant digits for small numbers (0.0028, 0.45, 3.1), whole numbers from 100 up."""
    if not math.isfinite(value):  # a counter read wrong must not fail the line that reports it
        return str(value)
    if value >= 100:
        return f"{value:,.0f}"
    if value <= 0:
        return "0"
    decimals = max(0, 1 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"
