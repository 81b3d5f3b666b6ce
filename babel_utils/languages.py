"""The languages of the study: one table with ISO code, name, family, genus and script."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One language of the study."""

    code: str  # ISO 639-1
    name: str
    family: str
    genus: str
    script: str


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("en", "English", "Indo-European", "Germanic", "Latin"),
        Language("fr", "French", "Indo-European", "Romance", "Latin"),
        Language("es", "Spanish", "Indo-European", "Romance", "Latin"),
        Language("pt", "Portuguese", "Indo-European", "Romance", "Latin"),
        Language("hi", "Hindi", "Indo-European", "Indic", "Devanagari"),
        Language("ur", "Urdu", "Indo-European", "Indic", "Arabic"),
        Language("bn", "Bengali", "Indo-European", "Indic", "Bengali"),
        Language("ar", "Arabic", "Afro-Asiatic", "Semitic", "Arabic"),
        Language("zh", "Chinese", "Sino-Tibetan", "Sinitic", "Han"),
    ]
}

PAPER_LANGUAGES: tuple[str, ...] = tuple(LANGUAGES)


def get_language(code: str) -> Language:
    """Return the table row of a language, or a clear error naming the known codes."""
    if code not in LANGUAGES:
        known = ", ".join(LANGUAGES)
        raise ValueError(f"Unknown language {code!r}. Known languages: {known}. "
                         "Add a row to babel_utils/languages.py to study another one.")
    return LANGUAGES[code]
