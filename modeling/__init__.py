"""Remote code of SimCSE models (installed as ``simcse_hub.modeling``); see ``modeling_simcse.py``."""
