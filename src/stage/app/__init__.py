"""The web studio (`stage studio`): a Gradio workspace over `stage session` folders (see `studio.py`)."""
