"""service/problems.py: the catalogue and the slug type agree, and stay framework-free."""

from __future__ import annotations

from typing import get_args

from service.problems import PROBLEMS, TYPE_PREFIX, ProblemError, ProblemSlug


def test_every_slug_has_one_entry() -> None:
    assert set(PROBLEMS) == set(get_args(ProblemSlug))
    for slug, kind in PROBLEMS.items():
        assert kind.slug == slug and kind.type == TYPE_PREFIX + slug
        assert 400 <= kind.status < 600 and kind.title and kind.example


def test_problem_document() -> None:
    error = ProblemError("unknown-model", "no model 'x'; known: compact")
    doc = error.kind.document(error.detail, "/classify")
    assert (doc.status, doc.instance) == (404, "/classify")
    assert doc.type == "urn:fer-service:problem:unknown-model" and doc.title == "No such model"
