"""The shim's configuration: one YAML file, validated at start, with `SHIM_*` environment overrides.

Every key can be overridden by an environment variable named `SHIM_` + the key path joined by `__`,
e.g. `SHIM_UPSTREAMS__SDRS=http://127.0.0.1:9000` or `SHIM_LISTEN__PORT=9090`. Environment values
win over the file. Relative paths (`mappings`, TLS files, `upstreams.ca_file`, `aksk` key files) are
resolved against the config file's directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError
from yarl import URL

from shim.validation import ConfigError, describe_validation_error, read_yaml

ENV_PREFIX = "SHIM_"  # SHIM_<SECTION>__<KEY> overrides a key of the file
# A Host header value: a DNS name or IPv4 address, or a bracketed IPv6 address, and an optional port.
_HOST_AND_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::(?P<port>[0-9]{1,5}))?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenTls(_Section):
    """Serve https: PEM files, relative to the config file; re-read on SIGHUP."""

    certificate: Path = Field(description="PEM certificate chain, the server's certificate first")
    private_key: Path = Field(description="PEM private key of that certificate (not encrypted)")


class Listen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls: ListenTls | None = Field(None, description="serve https with this certificate; plain http without")


class Management(_Section):
    """A second, plain-http listener for the shim's own endpoints (/metrics, /healthz, /readyz,
    /migration), e.g. on the pod IP for Prometheus and httpGet probes while clients use loopback."""

    host: str = Field("127.0.0.1", description="address of the management listener (0.0.0.0: every interface)")
    port: int = Field(ge=0, le=65535, description="its port; must differ from listen.port")
    also_on_listen: bool = Field(
        True, description="the client listener keeps answering the management paths too; false: only the "
        "management listener does, and the client listener passes them to the legacy endpoint like any path",
    )


def _origin_url(value: str) -> str:
    """Accept only `scheme://host[:port]`: the shim builds every path itself."""
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    if url.path not in ("", "/") or url.query_string or url.fragment or url.user:
        raise ValueError("must be scheme://host[:port] only, without path, query or credentials")
    return str(url.origin())


class Upstreams(_Section):
    sdrs: str = Field(description="SDRS endpoint, scheme://host[:port]; the shim adds /v1/{project_id}/...")
    legacy: str | None = Field(None, description="Old EVS endpoint; untranslated traffic goes here")
    ca_file: Path | None = Field(
        None, description="PEM bundle of the CAs https upstreams are verified against (default: the system's)"
    )
    trust_env: bool = Field(
        False, description="reach the upstreams through the proxy that HTTPS_PROXY/HTTP_PROXY name, except "
        "the hosts in NO_PROXY"
    )

    @field_validator("sdrs")
    @classmethod
    def _sdrs_origin(cls, value: str) -> str:
        return _origin_url(value)

    @field_validator("legacy")
    @classmethod
    def _legacy_origin(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _origin_url(value)


class Passthrough(_Section):
    preserve_host: bool = Field(
        False,
        description="forward the client's Host header instead of the legacy endpoint's own; for "
        "clients that reach the shim under the legacy endpoint's name (keeps AK/SK signatures valid)",
    )
    spool_directory: str | None = Field(
        None,
        description="where request bodies over limits.request_buffer_bytes are written while they arrive "
        "(unlinked files: nothing is left behind); default the system's temporary directory ($TMPDIR, /tmp)",
    )


class Timeouts(_Section):
    """Seconds. `connect` includes waiting for a free pooled connection."""

    connect: float = Field(3.0, gt=0)
    read: float = Field(30.0, gt=0)
    total: float = Field(60.0, gt=0)


class UpstreamTimeouts(_Section):
    sdrs: Timeouts = Timeouts(connect=3.0, read=10.0, total=15.0)
    legacy: Timeouts = Timeouts(connect=3.0, read=120.0, total=300.0)
    sdrs_list: float = Field(30.0, gt=0, description="a whole SDRS list, all its pages together; longer: 504")
    request_head: float = Field(
        30.0, gt=0, description="receiving one request head (request line and headers), from the connection's "
        "opening for its first request and from the first byte for the next ones; longer: 408 and close",
    )
    request_body_idle: float = Field(
        30.0, gt=0, description="longest pause while a request body arrives; longer: 408, the connection (and "
        "a legacy connection the body was streaming to) closed",
    )


class Limits(_Section):
    action_body_bytes: int = Field(16384, gt=0, description="largest body accepted on a translated action")
    pool_connections: int = Field(100, gt=0, description="connections per upstream")
    max_concurrent_translated: int = Field(
        256, gt=0, description="translated calls served at once; more get a legacy 503 with Retry-After"
    )
    # aiohttp's request parser limits; a request over them gets aiohttp's own plain-text 400.
    max_line_size: int = Field(8190, ge=256, le=1048576, description="longest request line, bytes")
    max_field_size: int = Field(8190, ge=256, le=1048576, description="longest header line, bytes")
    max_headers: int = Field(128, ge=8, le=10000, description="most header lines in one request")
    signed_body_bytes: int = Field(
        1048576, gt=0, description="largest body of an AK/SK-signed request whose body hash is signed (it is "
        "read whole and checked before anything is forwarded); UNSIGNED-PAYLOAD bodies stream without limit"
    )
    unverified_signed_bytes: int = Field(
        16 * 1048576, gt=0, le=1024 * 1048576,
        description="bytes of AK/SK-signed bodies held before their signature is checked, all requests together "
        "(anyone who knows an access key id can send one); a body that would pass it: 503 with Retry-After",
    )
    request_head_bytes: int = Field(
        65536, ge=1024, le=16 * 1048576,
        description="most bytes of one request head, all lines together; more: 400 and close",
    )
    client_connections: int = Field(
        512, ge=1, le=100000,
        description="open client connections; at the limit an idle keep-alive connection is closed to make "
        "room, and without one the new connection is closed at once",
    )
    upstream_body_bytes: int = Field(
        4 * 1048576, ge=65536, le=1024 * 1048576,
        description="largest upstream answer the shim reads whole (SDRS answers, the legacy list it merges); "
        "larger: 502",
    )
    sdrs_list_items: int = Field(
        10000, ge=1, le=1000000,
        description="most items one SDRS list may hold (pages of 1000, so at most items/1000 + 1 pages); "
        "more: 502",
    )
    request_buffer_bytes: int = Field(
        65536, ge=0, le=16 * 1048576,
        description="a passthrough request body up to this size is read whole into memory before a legacy "
        "connection is taken, so a slow client holds only its own connection; larger bodies are read into a "
        "temporary file first (request_spool_bytes)",
    )
    request_spool_bytes: int = Field(
        8 * 1048576, ge=0, le=1024 ** 4,
        description="most bytes of passthrough request bodies held in temporary files at once, all requests "
        "together (bodies over request_buffer_bytes are read there whole before a legacy connection is taken); "
        "a body that does not fit now: 503 with Retry-After; one larger than this: 400",
    )
    request_body_min_rate: int = Field(
        500, ge=0, le=1024 ** 3,
        description="bytes per second a passthrough request body must average once timeouts.request_body_idle "
        "has passed (its deadline grows by one second per this many bytes received, as Apache's "
        "mod_reqtimeout MinRate); slower: 408 and the connection closed; 0: no minimum",
    )

    @model_validator(mode="after")
    def _head_holds_a_line(self) -> Limits:
        if self.request_head_bytes < max(self.max_line_size, self.max_field_size):
            raise ValueError("request_head_bytes must be at least max_line_size and max_field_size")
        return self

    @model_validator(mode="after")
    def _signed_bodies_fit(self) -> Limits:
        if self.unverified_signed_bytes < self.signed_body_bytes:
            raise ValueError("limits.unverified_signed_bytes must be at least limits.signed_body_bytes "
                             "(else a signed body of the largest size could never be checked)")
        return self


class Actions(_Section):
    completion: Literal["accepted", "confirmed"] = Field(
        "accepted",
        description="accepted: legacy 200 once SDRS returns a job id; confirmed: once the job has "
        "left INIT and the group shows the action running (a failed job becomes a legacy error)",
    )
    confirm_timeout_seconds: float = Field(
        60.0, gt=0, description="longest wait for a confirmation (and for a disk expansion to finish)"
    )
    poll_initial_seconds: float = Field(0.5, gt=0, description="first pause between job polls")
    poll_max_seconds: float = Field(5.0, gt=0, description="longest pause between job polls")
    wait_for_previous_seconds: float = Field(
        30.0, ge=0, le=3600,
        description="an action arriving while the previous, different action's job still runs (a Sync "
        "right after a Stop) waits this long for it to finish, then gets 409",
    )
    settle_seconds: float = Field(
        60.0, ge=0,
        description="after an action POST whose outcome is unknown (SDRS timed out or dropped the "
        "connection), refuse new actions on that group for this long",
    )


class Shadow(_Section):
    """Groups in mode `shadow` (README, Migration): the legacy endpoint answers; afterwards, off the
    client's path, the shim compares what SDRS would have answered (reads) or would have done (actions)."""

    interval_seconds: float = Field(
        60.0, ge=0, le=86400, description="at most one comparison per group this often (per process); "
        "reads in between are counted as skipped",
    )
    max_concurrent: int = Field(
        4, ge=1, le=256, description="comparisons and dry runs at once; one more is dropped (counted)"
    )
    max_answer_bytes: int = Field(
        1048576, ge=1024, le=64 * 1048576,
        description="a legacy answer (or action body) larger than this is relayed but not compared (counted)",
    )


class Lifecycle(_Section):
    """SIGTERM: /readyz turns 503, after `readiness_grace_seconds` the listener closes, then in-flight
    requests get up to `drain_seconds` to finish before they are cut."""

    drain_seconds: float = Field(10.0, ge=0, le=3600)
    readiness_grace_seconds: float = Field(1.0, ge=0, le=600)


def default_state_path() -> Path:
    """Where the durable state lives unless configured: the XDG state directory (systemd's
    `STATE_DIRECTORY` when set). The container image sets `SHIM_STATE__PATH` to its volume."""
    base = os.environ.get("STATE_DIRECTORY") or os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "evs-sdrs-shim" / "state.sqlite3"


class State(_Section):
    """Where the duplicate-action guard (and everything else that must outlive a request) is kept."""

    backend: Literal["memory", "sqlite", "redis"] = Field(
        "sqlite", description="memory: this process only (tests, demos); sqlite: a file shared by the "
        "workers of one `shim serve`, surviving restarts; redis: shared by several shims",
    )
    path: Path = Field(default_factory=default_state_path, description="the SQLite file (sqlite backend)")
    url: str | None = Field(None, description="redis://[user:password@]host:port/db (redis backend)")
    key_prefix: str = Field("evs-sdrs-shim:", min_length=1, description="prefix of every Redis key")
    lease_seconds: float = Field(
        30.0, gt=0, le=3600, description="how long a crashed holder can keep a group locked; renewed while held",
    )
    timeout_seconds: float = Field(2.0, gt=0, le=60, description="longest wait for one store operation")
    sentinels: list[str] = Field(
        default_factory=list, description="host:port of each Redis Sentinel (redis backend): the shim asks them "
        "for the primary and follows a failover; state.url, if given, names only the database and credentials",
    )
    sentinel_master: str = Field("mymaster", min_length=1, description="the primary's name in the Sentinels")
    min_replicas: int | None = Field(
        None, ge=0, le=16, description="replicas that must acknowledge each write (WAIT) before the shim relies "
        "on it, else the action is refused (503); default 1 with sentinels, else 0",
    )
    replica_ack_timeout_seconds: float = Field(
        0.5, gt=0, le=10, description="longest wait for the replicas' acknowledgement of one write",
    )

    @property
    def replicas_to_wait_for(self) -> int:
        if self.min_replicas is not None:
            return self.min_replicas
        return 1 if self.sentinels else 0

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [_host_port(address) for address in self.sentinels]

    @model_validator(mode="after")
    def _backend_has_its_address(self) -> State:
        if self.backend == "redis" and not self.url and not self.sentinels:
            raise ValueError("the redis backend needs state.url (redis://host:port/db) or state.sentinels")
        for address in self.sentinels:
            _host_port(address)
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("state.url must be a redis://, rediss:// or unix:// URL")
        return self


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"state.sentinels: {address!r} is not host:port")
    return host.strip("[]"), int(port)


class Tracing(_Section):
    """OpenTelemetry traces over OTLP/HTTP (README, Operations, Tracing); needs the `tracing` extra."""

    enabled: bool = Field(False, description="make spans and export them; off: no span, nothing exported")
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="the collector's OTLP/HTTP traces URL (its path included)",
    )
    service_name: str = Field("evs-sdrs-shim", min_length=1, description="the service.name resource attribute")
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="share of traces the shim starts that are kept; a client's traceparent "
        "decides for its own",
    )
    export_interval_seconds: float = Field(5.0, gt=0, le=300, description="longest wait before a batch is sent")
    export_timeout_seconds: float = Field(10.0, gt=0, le=300, description="longest wait for the collector")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class AkskKeyPair(_Section):
    """Where one AK/SK pair is read from: a file (e.g. a mounted Kubernetes Secret) or an environment
    variable, for each half. The values themselves never appear in the config file or a log."""

    access_key_file: Path | None = None
    access_key_env: str | None = Field(None, min_length=1)
    secret_key_file: Path | None = None
    secret_key_env: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_source_each(self) -> AkskKeyPair:
        for half in ("access_key", "secret_key"):
            given = [getattr(self, f"{half}_{kind}") is not None for kind in ("file", "env")]
            if sum(given) != 1:
                raise ValueError(f"give exactly one of {half}_file and {half}_env")
        return self


class Settings(BaseSettings):
    """The whole configuration; see README "Configuration" for every key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen: Listen = Listen()
    management: Management | None = Field(
        None, description="a second listener for /metrics, /healthz, /readyz and /migration (default: none)"
    )
    upstreams: Upstreams
    passthrough: Passthrough = Passthrough()
    mappings: Path = Path("./mappings")
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    limits: Limits = Limits()
    actions: Actions = Actions()
    lifecycle: Lifecycle = Lifecycle()
    state: State = State()
    shadow: Shadow = Shadow()
    tracing: Tracing = Tracing()
    aksk: list[AkskKeyPair] = Field(
        [], description="key pairs AK/SK-signed requests are verified and re-signed with (one per project)"
    )
    aksk_host_aliases: list[str] = Field(
        [], description="more Host values (host or host:port) a client may sign for the shim, besides the address "
        "it connected to, listen.host:listen.port and upstreams.legacy's host: e.g. a Service name or the nginx "
        "front's address; a signature over any other Host is refused",
    )
    workers: int = Field(1, ge=1, le=64, description="processes sharing the listen port (SO_REUSEPORT)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line; text: `time LEVEL logger: message key=value`"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the YAML file (passed in as init values).
        return env_settings, init_settings

    @field_validator("aksk_host_aliases")
    @classmethod
    def _host_aliases(cls, values: list[str]) -> list[str]:
        for value in values:
            match = _HOST_AND_PORT.match(value)
            if match is None or not 0 < int(match["port"] or 80) < 65536:
                raise ValueError(f"{value[:100]!r} is not host or host:port (no scheme, path or user)")
        return values

    @model_validator(mode="after")
    def _management_apart(self) -> Settings:
        management = self.management
        if management is not None and management.port != 0 and management.port == self.listen.port \
                and management.host == self.listen.host:
            raise ValueError("management.port must differ from listen.port on the same host")
        return self

    @model_validator(mode="after")
    def _shared_state_for_workers(self) -> Settings:
        if self.workers > 1 and self.state.backend == "memory":
            raise ValueError("state.backend memory cannot be shared by workers > 1: use sqlite or redis")
        return self


def environment_variable_for(loc: tuple[int | str, ...]) -> str | None:
    """The `SHIM_*` variable that set the value at `loc` (or a section holding it), if one is set."""
    names = {name.upper(): name for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    for end in range(len(loc), 0, -1):
        wanted = ENV_PREFIX + "__".join(str(part).upper() for part in loc[:end])
        if wanted in names:
            return names[wanted]
    return None


def _blame_environment(loc: tuple[int | str, ...]) -> str | None:
    name = environment_variable_for(loc)
    return None if name is None else f"environment variable {name}"


def settings_from_mapping(data: dict[str, Any], *, source: str, base_dir: Path) -> Settings:
    """Validate already-parsed config data; `base_dir` anchors a relative `mappings` path. A problem
    in a value from a `SHIM_*` variable names that variable, not the file."""
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(source, err, blame=_blame_environment)) from None
    except SettingsError as err:  # a section given as JSON in one variable (SHIM_LIMITS='{...') does not parse
        field = re.search(r'field "([^"]+)"', str(err))
        name = environment_variable_for((field[1],)) if field else None
        raise ConfigError(f"environment variable {name or ENV_PREFIX + '*'}: not a valid JSON object "
                          "for that section") from None
    return _anchored(settings, base_dir)


def _anchored(settings: Settings, base_dir: Path) -> Settings:
    """Every relative path in `settings` resolved against `base_dir` (the config file's directory)."""

    def anchored(section: Any, *keys: str) -> Any:
        update = {}
        for key in keys:
            path = getattr(section, key)
            if path is not None and not path.is_absolute():
                update[key] = (base_dir / path).resolve()
        return section.model_copy(update=update)

    listen = settings.listen
    if listen.tls is not None:
        listen = listen.model_copy(update={"tls": anchored(listen.tls, "certificate", "private_key")})
    return anchored(settings, "mappings").model_copy(update={
        "listen": listen,
        "upstreams": anchored(settings.upstreams, "ca_file"),
        "aksk": [anchored(pair, "access_key_file", "secret_key_file") for pair in settings.aksk],
        "state": anchored(settings.state, "path"),
    })  # fmt: skip


def load_settings(path: Path) -> Settings:
    """Read and validate the YAML config file at `path`; ConfigError carries one clear line."""
    data = read_yaml(path, "config file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return settings_from_mapping(data, source=str(path), base_dir=path.parent.resolve())


def config_schema() -> dict[str, Any]:
    """The config file's JSON Schema (draft 2020-12), from the models `load_settings` validates with."""
    schema = Settings.model_json_schema(mode="validation")
    schema.pop("description", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "evs-sdrs-shim config file",
            "description": "shim serve --config FILE; every key may be overridden by SHIM_<KEY>[__<SUBKEY>] "
            "variables (README, Configuration)", **{k: v for k, v in schema.items() if k != "title"}}
