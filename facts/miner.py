"""Online log templates: drain3's Drain over lines masked by facts.entities, with a cap.

At most max_clusters templates live; drain3 drops the least recently seen one beyond that,
and `evicted` counts them (clusters ever made minus clusters alive).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from operator import eq
from typing import Protocol

from drain3.drain import Drain, LogCluster

# Measured on the sshd lines of fail2ban's test logs (tests/facts/test_miner.py): with depth 5
# the tree keys on the program and the first word of the message, so "Failed ..." and
# "Accepted ..." never share a template; 0.5 keeps "Failed password for invalid user X from
# <IP> port <NUM> ssh2" together while "User X from <IP> not allowed because ..." with a
# different reason stays apart.
DEFAULT_DEPTH = 5
DEFAULT_SIM_TH = 0.5
WILDCARD = "<*>"
# Masked line -> cluster id, for lines seen before (most of a log); cleared when full.
_MEMO_SIZE = 20_000


class TemplateRef(Protocol):
    """A cluster's template as it is now, alive or evicted (drain3's LogCluster)."""

    def get_template(self) -> str: ...


class _Clusters(OrderedDict[int, LogCluster]):
    """drain3's LRU cluster cache (LogClusterCache), in C where Drain calls it most: get()
    looks without touching, [id] touches (None if absent), adding beyond maxsize drops the
    least recently seen cluster."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, cluster_id: int) -> LogCluster | None:
        cluster = self.get(cluster_id)
        if cluster is not None:
            self.move_to_end(cluster_id)
        return cluster

    def __setitem__(self, cluster_id: int, cluster: LogCluster) -> None:
        super().__setitem__(cluster_id, cluster)
        self.move_to_end(cluster_id)
        if len(self) > self.maxsize:
            self.popitem(last=False)


class _FastDrain(Drain):
    """drain3's Drain with its hot spots made cheaper: the cluster cache in C, the similarity
    of a line to the candidate templates by map/sum, the merged template by a comprehension.

    Same results as Drain as long as no line token is the wildcard itself, which
    TemplateMiner.observe/match guarantee.
    """

    def __init__(self, depth: int, sim_th: float, max_clusters: int) -> None:
        super().__init__(depth=depth, sim_th=sim_th, max_clusters=max_clusters)
        self.id_to_cluster = _Clusters(max_clusters)
        self.profiler = None  # drain3 calls its no-op profiler several times per line

    def fast_match(
        self, cluster_ids: Sequence[int], tokens: list[str], sim_th: float, include_params: bool
    ) -> LogCluster | None:
        get, length = self.id_to_cluster.get, len(tokens)
        best, best_sim, best_params = None, -1.0, -1
        for cluster_id in cluster_ids:
            cluster = get(cluster_id)
            if cluster is None:
                continue
            template = cluster.log_template_tokens
            params = template.count(WILDCARD)
            similar = sum(map(eq, template, tokens))  # a wildcard never equals a token
            if include_params:
                similar += params
            sim = similar / length if length else 1.0
            if sim > best_sim or (sim == best_sim and params > best_params):
                best, best_sim, best_params = cluster, sim, params
        return best if best_sim >= sim_th else None

    def create_template(self, seq1: Sequence[str], seq2: Sequence[str]) -> list[str]:
        return [
            token if token == other else WILDCARD for token, other in zip(seq2, seq1, strict=True)
        ]


class TemplateMiner:
    """Learns templates from masked lines (observe) and finds them again (match)."""

    def __init__(
        self,
        max_clusters: int = 1000,
        sim_th: float = DEFAULT_SIM_TH,
        depth: int = DEFAULT_DEPTH,
    ) -> None:
        if max_clusters < 1:
            raise ValueError("max_clusters must be at least 1")
        self._drain = _FastDrain(depth=depth, sim_th=sim_th, max_clusters=max_clusters)
        self._clusters: _Clusters = self._drain.id_to_cluster
        self._memo: dict[str, int] = {}

    @property
    def alive(self) -> int:
        """Templates alive now."""
        return len(self._clusters)

    @property
    def created(self) -> int:
        """Templates ever made; ids are 1..created, a higher id was made later."""
        return int(self._drain.clusters_counter)

    @property
    def evicted(self) -> int:
        """Templates dropped by the cap since the start."""
        return self.created - self.alive

    def observe(self, masked_line: str) -> int:
        """Learn from one masked line; the id of its template (maybe new)."""
        cluster_id = self._memo.get(masked_line)
        if cluster_id is not None:
            cluster = self._clusters.get(cluster_id)  # no LRU touch
            if cluster is not None:
                # A line seen before leaves its template as it is: do what Drain would
                # (count it, mark the template recently seen) without the tree search.
                cluster.size += 1
                self._clusters.move_to_end(cluster_id)  # recently seen
                return cluster_id
        cluster, _ = self._drain.add_log_message(_no_wildcard(masked_line))
        self._remember(masked_line, cluster.cluster_id)
        return int(cluster.cluster_id)

    def match(self, masked_line: str) -> int | None:
        """The id of the alive template that covers the line, or None; learns nothing."""
        cluster_id = self._memo.get(masked_line)
        if cluster_id is not None and cluster_id in self._clusters:
            return cluster_id
        cluster: LogCluster | None = self._drain.match(
            _no_wildcard(masked_line), full_search_strategy="fallback"
        )
        return None if cluster is None else int(cluster.cluster_id)

    def template(self, cluster_id: int) -> str:
        """The template text of an alive cluster (KeyError if it was evicted)."""
        cluster: LogCluster | None = self._clusters.get(cluster_id)
        if cluster is None:
            raise KeyError(cluster_id)
        return str(cluster.get_template())

    def ref(self, cluster_id: int) -> TemplateRef | None:
        """A handle on an alive cluster's template that outlives its eviction; None if gone."""
        cluster: TemplateRef | None = self._clusters.get(cluster_id)
        return cluster

    def _remember(self, masked_line: str, cluster_id: int) -> None:
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()  # bounded; the next lines fill it again
        self._memo[masked_line] = cluster_id


def _no_wildcard(masked_line: str) -> str:
    # A literal "<*>" in a log line would count as similar to a template wildcard.
    return masked_line.replace(WILDCARD, "<_>") if WILDCARD in masked_line else masked_line
