"""Room: config. The `.rr.yaml` schema, its loader, its checks and its documentation.

Imports only `rrd.errors`, the standard library, PyYAML and python-dotenv, and knows no plugin
by name: plugins hand their section classes to `load_config` and `iter_settings`.
"""

from rrd.config.diff import Action, Change, ReloadPlan, diff, pin
from rrd.config.docs import SettingDoc, iter_settings, render_docs
from rrd.config.load import expand_env, load_config, load_dotenv
from rrd.config.schema import (
    REQUIRED,
    Config,
    FileLoggerOptions,
    HealthConfig,
    LimitsConfig,
    LogChannelConfig,
    LogsConfig,
    MetricsConfig,
    OnInitConfig,
    PoolConfig,
    RestartConfig,
    RpcConfig,
    ServerConfig,
    StatusConfig,
    setting,
)
from rrd.config.units import (
    Duration,
    Size,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from rrd.config.validate import validate

__all__ = [
    "REQUIRED",
    "Action",
    "Change",
    "Config",
    "Duration",
    "FileLoggerOptions",
    "HealthConfig",
    "LimitsConfig",
    "LogChannelConfig",
    "LogsConfig",
    "MetricsConfig",
    "OnInitConfig",
    "PoolConfig",
    "ReloadPlan",
    "RestartConfig",
    "RpcConfig",
    "ServerConfig",
    "SettingDoc",
    "Size",
    "StatusConfig",
    "diff",
    "expand_env",
    "format_duration",
    "format_size",
    "iter_settings",
    "load_config",
    "load_dotenv",
    "parse_duration",
    "parse_size",
    "pin",
    "render_docs",
    "setting",
    "validate",
]
