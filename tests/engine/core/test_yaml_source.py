from engine.core.yaml_source import load_yaml


def test_records_the_line_of_every_value() -> None:
    text = "pipeline: p\ntasks:\n  - id: a\n    sql: |\n      select 1\n"
    data, source, problems = load_yaml(text, "p.yaml")
    assert problems == []
    assert data["tasks"][0]["id"] == "a"
    assert source.line_of(("tasks", 0, "id")) == 3
    located = source.locations[("tasks", 0, "sql")]
    assert (located.line, located.content_line) == (4, 5)


def test_find_skips_path_elements_that_are_not_yaml_keys() -> None:
    _, source, _ = load_yaml("tasks:\n  - id: a\n    extract: {from: files}\n", "p.yaml")
    # pydantic puts the union tag ("files") into error locations
    assert source.line_of(("tasks", 0, "extract", "files", "path")) == 3


def test_duplicate_key_is_a_problem_with_both_lines() -> None:
    _, _, problems = load_yaml("pipeline: a\nparams: {}\npipeline: b\n", "p.yaml")
    assert [(p.code, p.line) for p in problems] == [("duplicate-key", 3)]
    assert "first at line 1" in problems[0].message


def test_malformed_yaml_reports_line_and_column() -> None:
    data, _, problems = load_yaml("pipeline: p\ntasks:\n  - id: a\n   bad: [1, 2\n", "p.yaml")
    assert data is None
    assert problems[0].code == "yaml-syntax"
    assert problems[0].line is not None
    assert problems[0].line >= 3
    assert problems[0].column is not None


def test_empty_document_is_a_problem() -> None:
    data, _, problems = load_yaml("# nothing\n", "p.yaml")
    assert data is None
    assert problems[0].code == "empty-file"


def test_absurd_nesting_is_a_problem_not_a_recursion_error() -> None:
    text = "a: " + "[" * 2000 + "]" * 2000 + "\n"
    _, _, problems = load_yaml(text, "deep.yaml")
    assert problems
    assert problems[0].code == "yaml-too-deep"
