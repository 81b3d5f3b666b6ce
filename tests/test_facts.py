"""The numbers README.md, BENCHMARKS.md and docs/ repeat from the committed outputs say what those outputs say
(babel_utils/run/facts.py reads each from the output that states it)."""

from __future__ import annotations

import shutil

from babel_utils.core.paths import REPO_ROOT
from babel_utils.run import facts


def test_every_marked_number_of_the_documents_is_what_its_output_says():
    assert facts.problems() == []


def test_a_document_that_says_something_else_fails(tmp_path):
    for document in facts.DOCUMENTS:
        (tmp_path / document).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / document, tmp_path / document)
    readme = tmp_path / "README.md"
    text = readme.read_text(encoding="utf-8")
    kernels = facts.FACTS["kernels"].read()
    readme.write_text(text.replace(f"<!-- fact:kernels -->{kernels}<!-- /fact -->",
                                   "<!-- fact:kernels -->AVX2<!-- /fact -->")
                      + "\n<!-- fact:no-such-fact -->1<!-- /fact -->\n", encoding="utf-8")
    found = facts.problems(tmp_path)
    assert any(p.startswith("README.md: kernels says 'AVX2'") and repr(kernels) in p for p in found)
    assert any("unknown fact 'no-such-fact'" in p for p in found)
    assert facts.write(tmp_path) == ["README.md"]
    assert f"<!-- fact:kernels -->{kernels}<!-- /fact -->" in readme.read_text(encoding="utf-8")


def test_a_fact_marked_nowhere_is_named(tmp_path):
    for document in facts.DOCUMENTS:
        text = (REPO_ROOT / document).read_text(encoding="utf-8")
        (tmp_path / document).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / document).write_text(facts.MARK.sub("", text), encoding="utf-8")
    found = facts.problems(tmp_path)
    assert len(found) == len(facts.FACTS) and all("is marked in none of" in p for p in found)


def test_printed_tables_are_read_back():
    text = ("   language   mask  accuracy  \\\n0        en  dense       0.0   \n1        fr  dense       0.5   \n\n"
            "   loglik\n0  -2.000\n1  -3.125\n")
    table = facts.printed_frame(text)
    assert list(table.columns) == ["language", "mask", "accuracy", "loglik"]
    assert table["loglik"].tolist() == [-2.0, -3.125] and table["language"].tolist() == ["en", "fr"]
