"""The HTML fragments notebooks show: values escaped once, HTML kept as it is."""

from __future__ import annotations

from engine.core.html import Html, badge, block, heading, seconds, table, tree


def test_values_are_escaped_once_and_html_is_kept() -> None:
    shown = table(["a", "b"], [("<b>x</b>", badge("OK", "#fff", "#000")), (None, 3)], right={"b"})
    assert "&lt;b&gt;x&lt;/b&gt;" in shown
    assert "<b>" not in shown
    assert '<span style="' in shown  # a badge is HTML already
    assert "&amp;lt;" not in shown
    assert shown.count('text-align:right;vertical-align:top">') == 3  # b's header and cells
    assert isinstance(block(shown), Html)


def test_an_empty_table_says_so_and_a_heading_skips_empty_facts() -> None:
    assert table(["a"], [], empty="no <rows>") == ('<p style="color:#5b6472">no &lt;rows&gt;</p>')
    assert heading("run <1>", None, "", "ok") == "<p><strong>run &lt;1&gt;</strong> · ok</p>"


def test_a_tree_nests_its_children() -> None:
    shown = tree({"a.x (value)": {"b.y (value)": {}}, "c<": {}})
    assert shown.count("<ul") == 2
    assert "<li><code>a.x (value)</code><ul" in shown
    assert "<code>c&lt;</code>" in shown


def test_durations_read_as_people_say_them() -> None:
    assert [seconds(v) for v in (None, 0.4242, 12.4, 185.0)] == ["", "0.42 s", "12 s", "3 min 05 s"]
