"""Configuration, paths, the language table, the stage cache and the results folder: what every stage stands on."""
