"""Many runs of `train.run` into sub-run directories of one parent, then one report over them.

    crossval.run(cfg, folds=5)          # `tunelab cv`: K folds, each fold's validation metrics, mean +- std
    search.run(cfg, trials=8, budget)   # `tunelab search`: Optuna over the config's search space

The parent directory holds sweep.json (what the sweep is: kind, data, config), one run directory per fold or
trial, and the report. A killed sweep goes on with --resume: finished sub-runs are read back, the first
unfinished one resumes from its newest checkpoint.
"""
