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

# Chosen on fail2ban's sshd lines (tests/facts/test_miner.py), masked by facts.entities and
# replayed 20 times with other users, addresses and ports. Depth 5 keys the tree on the
# program and the message's first word ("Failed ..." never meets "Accepted ..."); depth 6
# also on the third, often a user name, which splits one event into many (pair recall 0.95).
# With depth 5, sim_th 0.5 groups each event whatever its user, address, port or auth method
# (pair recall 1.0) and merges only variants of one event ("authentication failure/error
# for X", disconnects with different reasons). Higher thresholds separate those too
# (precision 0.75 at 0.5, 0.81 at 0.7) but break down once lines carry one more unmasked
# variable word: recall 0.51 at 0.5, 0.27 at 0.7, 0.14 at 0.8, templates 2-4 times as many.
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
    """drain3's Drain with its hot spots made cheaper: the cluster cache in C, the per-line
    bookkeeping, the similarity to the candidate templates by map/sum, the merged template by
    a comprehension. Same results as Drain (tests/facts/test_miner.py compares) as long as
    no line token is the wildcard itself, which TemplateMiner.observe/match guarantee."""

    def __init__(self, depth: int, sim_th: float, max_clusters: int) -> None:
        super().__init__(depth=depth, sim_th=sim_th, max_clusters=max_clusters)
        self.id_to_cluster = _Clusters(max_clusters)
        self.profiler = None  # drain3 calls its no-op profiler several times per line
        self.covered = False  # fast_match's best template covers the line as it is

    def fast_match(
        self, cluster_ids: Sequence[int], tokens: list[str], sim_th: float, include_params: bool
    ) -> LogCluster | None:
        get, length = self.id_to_cluster.get, len(tokens)
        best, best_sim, best_params, self.covered = None, -1.0, -1, False
        for cluster_id in cluster_ids:
            cluster = get(cluster_id)
            if cluster is None:
                continue
            template = cluster.log_template_tokens
            params = template.count(WILDCARD)
            same = sum(map(eq, template, tokens))  # a wildcard never equals a token
            sim = (same + params if include_params else same) / length if length else 1.0
            if sim > best_sim or (sim == best_sim and params > best_params):
                best, best_sim, best_params = cluster, sim, params
                self.covered = same + params == length  # the template needs no new wildcard
        return best if best_sim >= sim_th else None

    def add_log_message(self, content: str) -> tuple[LogCluster, str]:
        """Drain.add_log_message without its per-line overheads (profiler hooks, the
        tokenizer's delimiter loop, the LRU touch through a Python __getitem__)."""
        tokens = content.split()
        cluster = self.tree_search(self.root_node, tokens, self.sim_th, False)
        if cluster is None:
            self.clusters_counter += 1
            cluster = LogCluster(tokens, self.clusters_counter)
            self.id_to_cluster[cluster.cluster_id] = cluster
            self.add_seq_to_prefix_tree(self.root_node, cluster)
            return cluster, "cluster_created"
        change = "none"
        if not self.covered:  # most lines are covered by their template as it is
            merged = tuple(self.create_template(tokens, cluster.log_template_tokens))
            if merged != cluster.log_template_tokens:
                cluster.log_template_tokens = merged
                change = "cluster_template_changed"
        cluster.size += 1
        self.id_to_cluster.move_to_end(cluster.cluster_id)
        return cluster, change

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
