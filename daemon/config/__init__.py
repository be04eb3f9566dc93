"""The daemon's configuration: frozen, typed sections (schema.py), their rules (rules.py),
who may reach the binds (exposure.py), where files go (paths.py), and the loader."""

from streamd.errors import ConfigError

from .exposure import SecurityConfig, is_loopback_endpoint
from .loader import config_keys, env_var_for, load_config, unknown_environment
from .paths import (
    DEFAULT_CONFIG_PATH,
    control_socket_candidates,
    default_client_id,
    default_control_socket,
    default_state_dir,
    find_control_socket,
)
from .scheduling import EngineConfig, ShutdownConfig
from .schema import (
    ACKED_SOCKET_NAME,
    BLOCK,
    DROP_OLDEST,
    QUEUE_MAX_CHARS,
    CacheConfig,
    Config,
    ControlConfig,
    IngestConfig,
    LogConfig,
    MetricsConfig,
    ModelConfig,
    MqttConfig,
    OutputsConfig,
    SourcesConfig,
    SummaryConfig,
)
from .state import SnapshotConfig, SpoolConfig

__all__ = [
    "ACKED_SOCKET_NAME",
    "BLOCK",
    "DEFAULT_CONFIG_PATH",
    "DROP_OLDEST",
    "QUEUE_MAX_CHARS",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "EngineConfig",
    "IngestConfig",
    "LogConfig",
    "MetricsConfig",
    "ModelConfig",
    "MqttConfig",
    "OutputsConfig",
    "SecurityConfig",
    "ShutdownConfig",
    "SnapshotConfig",
    "SourcesConfig",
    "SpoolConfig",
    "SummaryConfig",
    "config_keys",
    "control_socket_candidates",
    "default_client_id",
    "default_control_socket",
    "default_state_dir",
    "env_var_for",
    "find_control_socket",
    "is_loopback_endpoint",
    "load_config",
    "unknown_environment",
]
