"""Generated lifecycles of `tsqr opensearch install/uninstall` on the real nodes (2.19 and 3.x).

Seeded random sequences of installs, reinstalls and uninstalls under one or two names, against two
real `tsqr serve` processes (one wants an API key, one reached by another host name), with the
key set, changed or unset, with an RRF rank constant that changes or not, and with an
administrator's own trusted regex and ``safe_delete_model`` present or not. Invariants after every
step: an install that fails changes nothing; every standing install's pipeline searches are
rewritten (and, where the node has neural-search, its rrf pipeline fuses the original and the
rewrite with that install's rank constant; where not, install says it left that pipeline out); a
connector is replaced exactly when its URL or key changed. After the last uninstall the cluster (settings, connectors, models,
model groups, pipelines, templates) is as found. Bounded: LIFECYCLE_STEPS steps per node (about a
minute each); TSQR_LIFECYCLE_SEED picks another seed, which a failure prints.
"""

from __future__ import annotations

import json
import os
import random
import uuid

import httpx
import pytest

from tests.conftest import engine_url
from tests.test_opensearch_install import cluster_state
from tsqr_plugins.search.bulk import BulkIndexer
from tsqr_plugins.testing.conformance import CORPUS, QUERY, REWRITE

pytestmark = pytest.mark.integration

LIFECYCLE_STEPS = 20
SEED = int(os.environ.get("TSQR_LIFECYCLE_SEED", "20261204"))
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
SAFE_DELETE = "plugins.ml_commons.safe_delete_model"
KEY = "k1"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    pytest.importorskip("uvicorn")
    from tsqr_plugins.service import ServiceConfig, create_app
    from tsqr_plugins.testing.service import RunningApp

    rewrites = tmp_path_factory.mktemp("lifecycle") / "rewrites.json"
    rewrites.write_text(json.dumps({QUERY: REWRITE}))
    keyed = ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True, api_key=KEY)
    open_ = ServiceConfig(rewriter="file", rewrites=str(rewrites), no_cache=True)
    with RunningApp(create_app(keyed)) as first, RunningApp(create_app(open_)) as second:
        # (URL as OpenSearch reaches it, the key the service wants)
        yield [(first.url, KEY), (f"http://localhost:{second.port}", None)]


def fused(url: str, index: str, pipeline: str) -> list[tuple[str, float]]:
    answer = httpx.post(f"{url}/{index}/_search", params={"search_pipeline": pipeline}, timeout=60,
                        json={"query": {"match": {"text": QUERY}}, "size": 3})
    assert answer.status_code == 200, answer.text[:300]
    return [(hit["_id"], hit["_score"]) for hit in json.loads(answer.content)["hits"]["hits"]]


def ids(url: str, index: str, query: str, pipeline: str | None = None) -> list[str]:
    params = {"search_pipeline": pipeline} if pipeline else None
    answer = httpx.post(f"{url}/{index}/_search", params=params, timeout=60,
                        json={"query": {"match": {"text": query}}, "size": 3})
    assert answer.status_code == 200, answer.text[:300]
    return [hit["_id"] for hit in json.loads(answer.content)["hits"]["hits"]]


@pytest.mark.parametrize("engine", ["opensearch", "opensearch3"])
def test_generated_install_lifecycles_leave_the_cluster_as_found(engine, services):
    from tsqr_plugins.adapters.opensearch_install import OpenSearchInstaller
    from tsqr_plugins.errors import InputError

    url = engine_url(engine)
    rng = random.Random(f"{SEED}-{engine}")
    index = f"tsqr-lifecycle-{uuid.uuid4().hex[:6]}"
    indexer = BulkIndexer(url)
    indexer.create_index(index)
    indexer.index(index, list(CORPUS), list(CORPUS.values()), progress=False)
    wanted = ids(url, index, REWRITE)
    from tsqr_plugins.fusion import rrf_ranked
    from tsqr_plugins.querydsl import rewritten_match

    rankings = [ids(url, index, QUERY), ids(url, index, rewritten_match({"query": QUERY}, REWRITE)["query"])]
    rrf_rng = random.Random(f"{SEED}-{engine}-rrf")  # its own: the steps stay those the seed always gave

    settings = httpx.get(f"{url}/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"}).json()
    administrator = {}
    if rng.random() < 0.5:  # an administrator's own regex (sometimes one of our services' own)
        regexes = settings["defaults"].get(TRUSTED) or settings["persistent"].get(TRUSTED) or []
        own = rng.choice(["^https://admins-own\\.example\\.com/.*$", f"^{services[0][0].replace('.', '[.]')}/.*$"])
        administrator[TRUSTED] = list(regexes) + [own]
    # ml-commons then refuses (409) to delete a model a pipeline names: always on one line
    if engine == "opensearch3" or rng.random() < 0.5:
        administrator[SAFE_DELETE] = True
    if administrator:
        httpx.put(f"{url}/_cluster/settings", json={"persistent": administrator}).raise_for_status()
    found = cluster_state(url)

    names = [f"tsqr-life-{uuid.uuid4().hex[:4]}-{n}" for n in "ab"]
    installer = OpenSearchInstaller(url)
    neural_search = installer.neural_search() is not None
    assert neural_search == (engine == "opensearch3")  # what engines/engines.py installs
    rrf_ks: dict[str, int] = {}
    standing: dict[str, tuple[str, str | None, str]] = {}  # name -> (service URL, key, connector id)
    steps: list[str] = []
    try:
        for _ in range(LIFECYCLE_STEPS):
            name = rng.choice(names)
            if name in standing and rng.random() < 0.35:
                steps.append(f"uninstall {name}")
                report = installer.uninstall(name, index_template=False)
                assert not report.kept, (steps, report.kept)
                del standing[name]
            else:
                service_url, wants = rng.choice(services)
                key = rng.choice([None, KEY, "k2"])
                rrf_k = rrf_rng.choice([60, 2])
                steps.append(f"install {name} {service_url} key={key} rrf_k={rrf_k}")
                before = cluster_state(url)
                try:
                    installed = installer.install(service_url, name, api_key=key, index_template=False, rrf_k=rrf_k)
                except InputError as error:
                    assert wants is not None and key != wants, (steps, str(error))
                    assert cluster_state(url) == before, steps  # a failed install changes nothing
                else:
                    assert wants is None or key == wants, steps
                    if name in standing:
                        old_url, old_key, old_id = standing[name]
                        replaced = installed["connector_id"] != old_id
                        assert replaced == (old_url != service_url or old_key != key), steps
                    standing[name] = (service_url, key, installed["connector_id"])
                    rrf_ks[name] = rrf_k
                    assert (f"{name}-rewrite-rrf" in installed["search_pipelines"]) == neural_search, steps
                    assert ("not_installed" in installed) != neural_search, steps
            for standing_name in standing:  # every install still rewrites
                assert ids(url, index, QUERY, f"{standing_name}-rewrite") == wanted, (steps, standing_name)
                if neural_search:
                    scores = rrf_ranked(rankings, rrf_ks[standing_name])
                    got = fused(url, index, f"{standing_name}-rewrite-rrf")
                    assert [s for _, s in got] == pytest.approx(sorted(scores.values(), reverse=True)[:3], rel=1e-6), steps
                    assert all(score == pytest.approx(scores[doc_id], rel=1e-6) for doc_id, score in got), steps
            # one connector per standing name, nothing left of a replaced one
            connectors = {c.id: c.name for c in installer.tsqr_connectors() if c.name in names}
            assert connectors == {connector_id: n for n, (_, _, connector_id) in standing.items()}, steps
        for name in list(standing):
            steps.append(f"uninstall {name}")
            assert not installer.uninstall(name, index_template=False).kept, steps
        assert cluster_state(url) == found, f"TSQR_LIFECYCLE_SEED={SEED} on {engine}: {steps}"
        print(f"lifecycle on {engine} ({sorted(administrator)}): {steps}")
    except AssertionError:
        print(f"lifecycle failed: TSQR_LIFECYCLE_SEED={SEED} on {engine}; steps: {steps}")
        raise
    finally:
        for name in names:
            installer.uninstall(name, index_template=False)
        installer.close()
        indexer.close()
        httpx.delete(f"{url}/{index}")
        if administrator:
            httpx.put(f"{url}/_cluster/settings", json={"persistent": {key: None for key in administrator}})
