"""Console logging, the run's metrics.jsonl and comet-ml."""
from hw_asr.logger.writer import Writer, setup_logging

__all__ = ["Writer", "setup_logging"]
