"""Run loggers (console, W&B, none) and plots."""

from dan.logging.console import ConsoleLogger, Logger, NullLogger, build_logger

__all__ = ["ConsoleLogger", "Logger", "NullLogger", "build_logger"]
