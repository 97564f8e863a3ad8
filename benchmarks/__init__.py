"""stylegan_fast's benchmark suite: ceilings, ops, networks and training, one harness.

`python -m benchmarks.run` measures and writes a JSON result (see run.py);
`python -m benchmarks.report` turns the results into markdown tables. NOTES.md holds the
formulas, the floors and the log of optimisations (prediction and outcome).
"""
