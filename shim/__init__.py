"""evs-sdrs-shim: answers deprecated EVS v2 replication-consistency-group calls through SDRS v1."""

__version__ = "0.1.0"
