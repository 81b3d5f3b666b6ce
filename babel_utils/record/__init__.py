"""Stage 2 (02_record): which experts each token selects, counted into activation frequencies."""
