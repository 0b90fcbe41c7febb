"""The model: StageLM (decoder + context token), configs and presets, checkpoint import/export."""
