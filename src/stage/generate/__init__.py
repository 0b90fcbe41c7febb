"""Generation: the fast cached `Generator` (generator.py), whole-song windows (longform.py),
sampling and guidance (sampling.py, params.py), int8/bf16 paths (quantize.py), the slow exact
reference loop (reference.py), and the `stage generate / metronome / session` commands.
"""
