"""Running the study: cached stages, the notebook runner, the `babel` command, reports and reproduction checks."""
