"""Cell results -> tables, paper comparison, claim verdicts, figures. Reads results; never trains."""
