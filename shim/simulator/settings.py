"""Knobs of the SDRS simulator. Mutable on purpose: tests may shorten job durations between calls."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimulatorSettings:
    job_init_seconds: float = 0.2  # job INIT: the group keeps its status (SDRS accepts a second action)
    job_run_seconds: float = 1.0  # job RUNNING: the group shows the transitional status
    # After a start/re-protect job succeeded, its pairs stay `copying` (progress rising) this long
    # before they are `active`; 0: the copy ends with the job.
    sync_seconds: float = 0.0
    tokens: set[str] | None = None  # None: any non-empty X-Auth-Token is valid
    credentials: dict[str, str] = field(default_factory=dict)  # AK -> SK for SDK-HMAC-SHA256

    def __post_init__(self) -> None:
        if min(self.job_init_seconds, self.job_run_seconds, self.sync_seconds) < 0:
            raise ValueError("job and sync durations must not be negative")
