"""The run directory: one run trained into a folder that survives a kill (``runner``),
its files (``records``), their audit (``rundir``) and identity (``runid``), atomic
writes (``atomic``), the four-panel figures, stopping at a safe point, TensorBoard.
Imports the core (``tfnorm``), never ``tfnorm.analysis``."""
