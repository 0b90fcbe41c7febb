"""Generation: `generate_stems` (pipeline.py: audio and one `GenerationOptions` in, stems out),
the fast cached `Generator` (generator.py), whole-song windows (longform.py), sampling and
guidance (sampling.py), the options and results (params.py), int8/bf16 paths (quantize.py), the
slow exact reference loop (reference.py), the take pipeline (takes.py: settings, context and
plan; render.py: the model run and headroom; naming.py: file names; takefiles.py: sidecars and
writing), sessions (session.py), and the `stage generate / metronome / session` commands
(commands.py).
"""
