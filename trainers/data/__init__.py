"""Step 1 of a trial, the data: ``read`` a dataset's files into the task's checked rows (``rows``), ``split``
them (seeded; k folds), ``encode`` them into token ids (cached per process). Import from the submodules."""
