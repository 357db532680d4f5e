"""Console logging, the run's metrics.jsonl and comet-ml."""

from hw_asr.logger.writer import Writer, attach_log_file, setup_logging

__all__ = ["Writer", "attach_log_file", "setup_logging"]
