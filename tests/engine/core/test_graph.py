import pytest

from engine.core.graph import Graph, find_cycles


def test_self_loop() -> None:
    assert find_cycles({"a": ["a"]}) == [["a", "a"]]


def test_two_cycle() -> None:
    assert find_cycles({"a": ["b"], "b": ["a"]}) == [["a", "b", "a"]]


def test_indirect_cycle_path_follows_data_flow() -> None:
    # a reads c, b reads a, c reads b: a -> b -> c -> a
    assert find_cycles({"a": ["c"], "b": ["a"], "c": ["b"]}) == [["a", "b", "c", "a"]]


def test_one_cycle_per_disconnected_component() -> None:
    upstream = {"a": ["b"], "b": ["a"], "x": [], "c": ["d"], "d": ["c"], "e": ["x"]}
    assert find_cycles(upstream) == [["a", "b", "a"], ["c", "d", "c"]]


def test_self_loop_inside_a_larger_cycle_does_not_hide_it() -> None:
    assert find_cycles({"a": ["c", "a"], "b": ["a"], "c": ["b"]}) == [["a", "b", "c", "a"]]


def test_acyclic_graph_has_no_cycles_even_when_deep() -> None:
    chain = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(5000)}
    assert find_cycles(chain) == []  # iterative: no recursion limit


def test_topological_order_is_stable_by_declaration() -> None:
    graph = Graph({"c": [], "a": ["c"], "b": ["c"], "d": ["b", "a"]})
    assert graph.topological() == ["c", "a", "b", "d"]
    assert graph.levels() == {"c": 0, "a": 1, "b": 1, "d": 2}


def test_topological_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Graph({"a": ["b"], "b": ["a"]}).topological()


def test_closures() -> None:
    graph = Graph({"a": [], "b": ["a"], "c": ["b"], "d": ["a"], "e": []})
    assert graph.ancestors(["c"]) == {"a", "b"}
    assert graph.descendants(["a"]) == {"b", "c", "d"}
    assert graph.descendants(["e"]) == set()
