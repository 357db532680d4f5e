"""Command-line tools: ``python -m hw_asr.tools.<name> --help``."""
