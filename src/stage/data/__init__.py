"""Stem data: dataset readers and manifests (`stage prepare`), training samples (§6.5),
metronome click tracks (§4) and beat tracking.

- `datasets`: MoisesDB, MUSDB18-HQ, Slakh2100 and plain-folder readers -> `Song`;
- `manifest`: the resumable JSON-lines manifest with durations, beats and captions;
- `samples`: `SampleConfig` and `StemDataset` (context / target / caption examples);
- `metronome`: `render_clicks`, `render_metronome` (the training click recipe);
- `beats`: `track_beats` (madmom, librosa fallback); `augment`: speed / pitch.
"""
