"""`avar study`: the paper's findings reproduced or refuted on a grid of variants x seeds.

grid: the experiments the `study` section asks for; experiments: DVC runs them (`dvc exp
run --queue`, `dvc queue start`) and reads each one's files back from its commit; stats
and findings: F1-F4 with their intervals and verdicts; report: reports/study.md and its
plots; tracking: the MLflow study run and a child run per experiment; correlate: F1 over
checkpoints named by hand.
"""
