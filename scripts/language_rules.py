"""The rules that build the language table (scripts/build_language_table.py): WALS-style genera from Glottolog
paths, the script of a text from its letters, and the ASCII slugs that match names across sources. Only the
build uses them; the study reads the table they made (babel_utils/resources/languages.json)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Sequence

# --------------------------------------------------------------------------- genealogy rules

# Families WALS treats as a single genus (the genus is the family).
SINGLE_GENUS_FAMILIES = frozenset({
    "Abkhaz-Adyge", "Aymara", "Barbacoan", "Cahuapanan", "Guaicuruan", "Heiban", "Huitotoan",
    "Ijoid", "Japonic", "Jivaroan", "Kartvelian", "Koman", "Koreanic", "Matacoan", "Mayan",
    "Mixe-Zoque", "Mongolic", "Nilotic", "Panoan", "Quechuan", "Saharan", "Songhay", "Tacanan",
    "Totonacan", "Tucanoan", "Tungusic", "Turkic", "Yanomam", "Zamucoan", "Zaparoan",
})
# Glottolog nodes that are WALS genera (by Glottolog's name), in the families WALS splits.
GENERA = frozenset({
    # Indo-European
    "Albanian", "Armenian", "Eastern Baltic", "Celtic", "Germanic", "Greek", "Indo-Aryan", "Iranian",
    "Romance", "Slavic",
    # Atlantic-Congo
    "Bantoid", "Defoid", "Edoid", "Igboid", "Idomoid", "Delta Cross", "Kwa Volta-Congo", "Gur", "Ubangi",
    "North-Central Atlantic", "Mel", "Limba",
    # Austronesian
    "Oceanic", "Central Malayo-Polynesian", "Greater Central Philippine", "Northern Luzon", "Central Luzon",
    "Greater Barito", "Malayo-Sumbawan", "Javanesic", "South Sulawesi", "East Formosan",
    # Sino-Tibetan
    "Bodic", "Lolo-Burmese", "Kuki-Chin", "Naga", "Nungish", "Sinitic", "Tujia",
    # Afro-Asiatic
    "Berber", "West Chadic", "East Cushitic", "Semitic",
    # Uralic
    "Finnic", "Permian", "Saami", "Samoyedic",
    # Otomanguean
    "Mixtecan", "Popolocan-Mazatecan", "Zapotecan", "Chinantecan", "Otomian",
    # Austroasiatic, Uto-Aztecan, Athapaskan-Eyak-Tlingit
    "Khasian", "Aztec", "Athapaskan",
})
# Glottolog's name -> WALS's name of a genus, where the two differ.
GENUS_NAMES = {
    "Indo-Aryan": "Indic", "Eastern Baltic": "Baltic", "Kwa Volta-Congo": "Kwa",
    "North-Central Atlantic": "Northern Atlantic", "Delta Cross": "Cross River", "Greater Barito": "Barito",
    "Northern Luzon": "Northern Philippines", "Lolo-Burmese": "Burmese-Lolo", "East Cushitic": "Eastern Cushitic",
    "Permian": "Permic", "Popolocan-Mazatecan": "Popolocan", "Aztec": "Aztecan",
}
WRAPPER_PREFIXES = ("Nuclear ",)  # Glottolog nodes that only wrap the real first branch
# Which declaration keeps the bare code where several share it (UDHR file names): the paper's choices,
# the 1996 German spelling (as MGSM's), the newest Romanian text, modern monotonic Greek, and an
# official script of the languages the UDHR has in two. The others follow the rule of the module doc.
DEFAULT_DECLARATIONS = {
    "en": "eng", "fr": "fra", "es": "spa", "pt": "por_PT", "hi": "hin", "ur": "urd", "bn": "ben", "ar": "arb",
    "zh": "cmn_hans", "de": "deu_1996", "sw": "swh", "ja": "jpn", "th": "tha", "ro": "ron_2006",
    "el": "ell_monotonic", "sr": "srp_cyrl", "bs": "bos_latn", "az": "azj_latn", "uz": "uzn_latn",
    "tk": "tuk_latn", "ug": "uig_arab", "zlm": "mly_latn",
}
# The paper's names, where the UDHR's differ ("Portuguese (Portugal)", "Arabic, Standard", ...).
PAPER_NAMES = {"por_PT": "Portuguese", "arb": "Arabic", "cmn_hans": "Chinese"}
# ISO 639-3 code of a declaration -> the code URIEL classifies that language under.
URIEL_CODES = {"lvs": "lav", "ekk": "est", "nob": "nor", "nno": "nor", "twi": "aka", "fat": "aka",
               "zgh": "tzm", "cnr": "srp", "ido": "epo"}


def genus_of(path: Sequence[str]) -> str:
    """The genus of a genealogical path (family first), by the rules of the module docstring."""
    if not path:
        raise ValueError("An empty path has no genus (an isolate's genus is its name).")
    family = path[0]
    if family in SINGLE_GENUS_FAMILIES or len(path) == 1:
        return family
    for node in path[1:]:
        if node in GENERA:
            return GENUS_NAMES.get(node, node)
    branches = [node for node in path[1:] if not node.startswith(WRAPPER_PREFIXES)]
    return GENUS_NAMES.get(branches[0], branches[0]) if branches else family


def family_and_genus(path: Sequence[str], name: str) -> tuple[str, str]:
    """(family, genus) of a path; an isolate (empty path) is its own family and genus, `name`."""
    if not path:
        return name, name
    return path[0], genus_of(path)


# --------------------------------------------------------------------------- script detection

# Unicode character-name prefixes that name a script in more than one word, or differently.
_SCRIPT_PREFIXES = {
    "CJK UNIFIED IDEOGRAPH": "Han", "CJK COMPATIBILITY IDEOGRAPH": "Han", "IDEOGRAPHIC": "Han",
    "CANADIAN SYLLABICS": "Canadian Aboriginal", "OL CHIKI": "Ol Chiki", "TAI LE": "Tai Le",
    "TAI THAM": "Tai Tham", "TAI VIET": "Tai Viet", "NEW TAI LUE": "New Tai Lue", "MEETEI MAYEK": "Meetei Mayek",
    "SYLOTI NAGRI": "Syloti Nagri", "KAYAH LI": "Kayah Li", "PAHAWH HMONG": "Pahawh Hmong",
    "NYIAKENG PUACHUE HMONG": "Nyiakeng Puachue Hmong", "MENDE KIKAKUI": "Mende Kikakui",
    "HANIFI ROHINGYA": "Hanifi Rohingya", "SORA SOMPENG": "Sora Sompeng", "WARANG CITI": "Warang Citi",
    "MASARAM GONDI": "Masaram Gondi", "GUNJALA GONDI": "Gunjala Gondi", "OLD ITALIC": "Old Italic",
    "NKO": "NKo", "YI": "Yi", "HANGUL": "Hangul",
}
# First words of letter names that belong to no script of their own (modifier letters, ordinals).
_NOT_A_SCRIPT = {"MODIFIER", "FEMININE", "MASCULINE", "SUPERSCRIPT", "SUBSCRIPT", "COMBINING", "KATAKANA-HIRAGANA"}
_WIDTH_PREFIXES = ("FULLWIDTH ", "HALFWIDTH ")
KANA = ("Hiragana", "Katakana")
JAPANESE_SHARE = 0.05  # Han and kana, each at least this share of the letters: written in Japanese


@lru_cache(maxsize=None)
def char_script(ch: str) -> str | None:
    """The script of one letter from its Unicode name ("Latin", "Cyrillic", "Han", ...), None for a
    non-letter or a letter of no particular script."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    for prefix in _WIDTH_PREFIXES:
        name = name.removeprefix(prefix)
    if not name:
        return None
    for prefix, script in _SCRIPT_PREFIXES.items():
        if name == prefix or name.startswith(prefix + " ") or name.startswith(prefix + "-"):
            return script
    first = name.split(" ")[0]
    return None if first in _NOT_A_SCRIPT else first.title()


def script_shares(text: str) -> dict[str, float]:
    """Share of the letters of `text` in each script, largest first."""
    counts = Counter(s for s in map(char_script, text) if s is not None)
    total = sum(counts.values())
    return {script: n / total for script, n in counts.most_common()} if total else {}


def detect_script(text: str) -> str:
    """The script `text` is written in: that of most of its letters; Han and kana mixed, each at least
    5 % of the letters, is "Japanese" (ISO 15924 Jpan). "" for a text without letters."""
    shares = script_shares(text)
    if not shares:
        return ""
    main = next(iter(shares))
    kana = sum(shares.get(k, 0.0) for k in KANA)
    if main in ("Han",) + KANA and kana >= JAPANESE_SHARE and shares.get("Han", 0.0) >= JAPANESE_SHARE:
        return "Japanese"
    return main


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """Lower-case ASCII letters and digits of a text ("San Luís Potosí" -> "sanluispotosi")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _SLUG.sub("", ascii_text.lower())
