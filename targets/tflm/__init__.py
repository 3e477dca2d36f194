"""The TFLite Micro target (target.py): the arena a model needs (arena.py), the C++ sources that embed it
(sources.py), runs in the TFLite Micro interpreter and the written files (artifact.py), and the Cortex-M latency
estimate (mcu.py)."""
