"""Paper-independent machinery: errors, seeding, the cell store, task registry, loggers, sweeper."""
