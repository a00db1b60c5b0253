"""Knobs of the SDRS simulator. Mutable on purpose: tests may shorten job durations between calls."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimulatorSettings:
    job_init_seconds: float = 0.2  # job INIT: the group keeps its status (SDRS accepts a second action)
    job_run_seconds: float = 1.0  # job RUNNING: the group shows the transitional status
    tokens: set[str] | None = None  # None: any non-empty X-Auth-Token is valid
    credentials: dict[str, str] = field(default_factory=dict)  # AK -> SK for SDK-HMAC-SHA256

    def __post_init__(self) -> None:
        if self.job_init_seconds < 0 or self.job_run_seconds < 0:
            raise ValueError("job durations must not be negative")
