"""What a result depends on: the machine, the software, the code, and the GPU's state.

`Environment` is captured once per run and written into the result file's sidecar and
into every row's comparability columns. `GpuState` (clocks, temperature, power,
throttle reasons, read through NVML) is read before and after every measurement so a
throttled measurement is flagged.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Environment:
    device: str  # slug used in result paths, e.g. "nvidia-h100-80gb-hbm3" or "cpu-interpreter"
    gpu: str  # full device name
    compute_capability: str
    sm_count: int
    memory_gib: float
    driver: str
    cuda: str
    torch: str
    triton: str
    python: str
    platform: str
    host_hash: str
    git_sha: str
    git_dirty: bool
    interpreter: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GpuState:
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    throttle_reasons: tuple[str, ...] = ()

    @property
    def throttled(self) -> bool:
        """Clocks held down by power, heat or a hardware slowdown (idle and app settings don't count)."""
        return any(r in _THROTTLING for r in self.throttle_reasons)


def capture(device: torch.device) -> Environment:
    sha, dirty = git_revision()
    on_gpu = device.type == "cuda"
    if on_gpu:
        props = torch.cuda.get_device_properties(device)
        gpu, cc, sms = props.name, f"{props.major}.{props.minor}", props.multi_processor_count
        memory_gib = round(props.total_memory / 2**30, 1)
    else:
        gpu, cc, sms, memory_gib = f"cpu ({platform.processor() or platform.machine()})", "", 0, 0.0
    return Environment(
        device=device_slug(gpu) if on_gpu else "cpu-interpreter",
        gpu=gpu,
        compute_capability=cc,
        sm_count=sms,
        memory_gib=memory_gib,
        driver=_nvml_driver() if on_gpu else "",
        cuda=torch.version.cuda or "",
        torch=torch.__version__,
        triton=_triton_version(),
        python=platform.python_version(),
        platform=platform.platform(),
        host_hash=hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
        git_sha=sha,
        git_dirty=dirty,
        interpreter=not on_gpu,
    )


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def git_revision() -> tuple[str, bool]:
    """(short sha, dirty flag) of the checkout flashsuite runs from. A copy of the tree
    without git history (a CI artifact, a GPU box fed by rsync) can name its revision in
    FLASHSUITE_GIT_SHA and FLASHSUITE_GIT_DIRTY (0 or 1); otherwise ('unknown', True)."""
    if os.environ.get("FLASHSUITE_GIT_SHA"):
        return os.environ["FLASHSUITE_GIT_SHA"], os.environ.get("FLASHSUITE_GIT_DIRTY", "1") != "0"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
        return sha, bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def code_hash(paths: list[Path]) -> str:
    """Hash of the source files an implementation lives in, to tell versions apart."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def gpu_state(device: torch.device) -> GpuState:
    handle = _nvml_handle(device)
    if handle is None:
        return GpuState()
    import pynvml

    def read(fn, *args):
        try:
            return fn(handle, *args)
        except pynvml.NVMLError:
            return None

    reasons_mask = read(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons) or 0
    power_mw = read(pynvml.nvmlDeviceGetPowerUsage)
    return GpuState(
        sm_clock_mhz=read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        sm_clock_max_mhz=read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        temp_c=read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
        power_w=power_mw / 1000 if power_mw is not None else None,
        throttle_reasons=tuple(name for bit, name in _REASONS.items() if reasons_mask & bit),
    )


_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
    0x100: "display_clocks",
}
_THROTTLING = {"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"}


def _nvml_handle(device: torch.device):
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _nvml_handle_for(index)


@functools.cache
def _nvml_handle_for(index: int):
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(("GPU-" + uuid) if not uuid.startswith("GPU-") else uuid)
        except pynvml.NVMLError:
            return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no NVML library, no permission: clocks are simply not recorded
        return None


def _nvml_driver() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:
        return ""


def _triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return ""
