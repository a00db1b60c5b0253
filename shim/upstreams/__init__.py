"""The I/O edges toward the two upstreams: the SDRS client and its call helpers, the legacy passthrough,
and the header rules of a proxy. Uses `shim.translate` to judge what comes back."""
