"""The Ray adapter: every ``import ray`` of the sweep is in this package.

- ``worker``: inside a trial's Ray worker (the trainable, its reporter, the worker's start-up hook)
- ``search``: the Searcher over the Optuna study, and the TrialScheduler each pruner becomes
- ``callback``: trial events to the sweep's observer, failure kinds, the per-trial time limit
- ``tuner``: ``run_tuner``, the Tuner of one sweep phase
- ``session``: the Ray a sweep runs on, Ray's settings, temp dirs and logs, the auth token
- ``cluster``: ``sweep cluster up|down``, a real Ray cluster on this machine
- ``jobs``: a sweep submitted as a Ray job (Ray's Job Submission API)
- ``upload``: what a submitted job takes from the project (Ray's exclusion rules, credentials, links, size)
- ``_compat``: the only use of Ray's private names, each guarded

Importing the package imports no Ray (``session`` and ``cluster`` load it only where Ray starts).
"""
