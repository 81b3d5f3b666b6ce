"""Stages 3-6 (03-06): expert categories, language similarity and genealogy, instruction tuning."""
