"""Analysis over runs: intervals and the verdict rule (``stats``), claims and their tables
(``verdicts``), figures over schemes and seeds, the cross-scheme panels. Reads what runs
saved; imports the core and ``tfnorm.run``."""
