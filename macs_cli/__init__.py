"""macs: multi-source audio-to-image generation (MACS, AAAI 2026) as a command-line toolkit.

Stages, one folder each: ``audio`` (I/O, resampling, chunking), ``separation`` (the stage-1 model
and the separate API), ``training`` (data, losses, the train-sep loop), ``evaluation`` (metrics),
``weights`` (checkpoint formats and resolution), ``cli`` (the thin Typer layer).
"""

__version__ = "0.1.0"
