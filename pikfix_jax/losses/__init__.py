"""Training objectives: one module per method (`<method>.py`), and the terms they share
(`common.py`)."""
