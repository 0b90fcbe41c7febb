"""The web studio (`stage studio`): a Gradio app over `StageModel.generate` (see `studio.py`)."""
