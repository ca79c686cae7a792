"""Wire conversions: RouteResponses' memo gives exactly the responses built in full."""

from __future__ import annotations

import numpy as np
from _helpers import synthetic_table

from sidecar import Query, Router, RoutingTable, TableHolder
from sidecar._wire import RouteResponses, route_response

DIM = 384


def _table(
    *, revision: int = 7, learned: bool = False, k: int = 4, models: int = 6
) -> RoutingTable:
    costs = np.random.default_rng(revision + 1).uniform(0.1, 9.0, models).tolist()
    return synthetic_table(
        k=4, dim=DIM, models=models, revision=revision, seed=revision, costs=costs, learned=learned
    )


def _queries(n: int, names: tuple[str, ...], seed: int = 0) -> list[Query]:
    rng = np.random.default_rng(seed)
    queries = []
    for i in range(n):
        pick = rng.random(len(names)) < 0.6
        queries.append(
            Query(
                embedding=rng.standard_normal(DIM).tolist(),
                cost_weight=float(rng.choice([0.0, 0.25, 2.0])),
                candidates=[m for m, p in zip(names, pick, strict=True) if p] if i % 3 else (),
                request_id=f"req-{i}" if i % 2 else "",
            )
        )
    return queries


def test_memoised_responses_equal_responses_built_in_full(embedder):
    table = _table()
    router = Router(TableHolder(table), embedder)
    responses = RouteResponses()
    decisions = [router.route(q) for q in _queries(300, table.names)]
    decisions += decisions[:50]  # the same keys again: served from the memo
    for decision in decisions:
        assert responses.response(decision) == route_response(decision)
    keys = {(d.cluster, d.cost_weight, d.mask.tobytes()) for d in decisions}
    assert len(responses._memo[1]) == len(keys) < len(decisions)
    # A returned response is the caller's own: changing it leaves the memo alone.
    mine = responses.response(decisions[0])
    mine.scores[0].score = -1.0
    mine.model = "changed"
    assert responses.response(decisions[0]) == route_response(decisions[0])


def test_a_new_table_starts_a_new_memo_and_the_memo_is_bounded(embedder):
    first = _table(revision=7)
    holder = TableHolder(first)
    router = Router(holder, embedder)
    responses = RouteResponses(max_entries=3)
    queries = _queries(40, first.names, seed=1)
    for q in queries:
        decision = router.route(q)
        assert responses.response(decision) == route_response(decision)
        assert len(responses._memo[1]) <= 3
    assert holder.publish(_table(revision=8))
    for q in queries[:10]:
        decision = router.route(q)
        response = responses.response(decision)
        assert response == route_response(decision)
        assert response.revision == 8
    assert responses._memo[0] is holder.current


def test_learned_map_responses_are_built_in_full(embedder):
    table = _table(learned=True)
    router = Router(TableHolder(table), embedder)
    responses = RouteResponses()
    for q in _queries(30, table.names, seed=2):
        decision = router.route(q)
        assert decision.weights is not None
        assert responses.response(decision) == route_response(decision)
    assert not responses._memo[1]  # expected errors depend on the prompt's Φ: nothing kept


def test_batch_responses_use_the_same_memo(embedder):
    table = _table()
    router = Router(TableHolder(table), embedder)
    responses = RouteResponses()
    decisions = router.route_batch(_queries(20, table.names, seed=3))
    batch = responses.responses(decisions)
    assert list(batch.responses) == [route_response(d) for d in decisions]
