"""The Gradio demo Space of simcse_hub (``app.py``); installed as ``simcse_hub.demo`` for ``simcse-hub demo``."""
