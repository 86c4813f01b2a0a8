"""Reading a server's /metrics: fetch, parse with prometheus_client's parser, and sum series.

Used by `chainfs cluster status` and `chainfs top`, which show what the servers export rather than
asking them through another channel.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


class Samples(dict[tuple[str, Labels], float]):
    """Every sample of one scrape, keyed by (sample name, labels)."""

    def get_one(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.get((name, frozenset(labels.items())), default)

    def total(self, name: str, **match: str) -> float:
        """The sum over every series of `name` whose labels include `match`."""
        want = set(match.items())
        return sum(v for (n, labels), v in self.items() if n == name and want <= labels)

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """`name` summed per value of `label` (over series whose labels include `match`)."""
        want = set(match.items())
        out: dict[str, float] = {}
        for (n, labels), v in self.items():
            if n == name and want <= labels:
                key = dict(labels).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), v) for (n, labels), v in self.items() if n == name]


def parse(text: str) -> Samples:
    out = Samples()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(address: str, timeout: float = 2.0) -> Samples:
    """Samples of http://ADDRESS/metrics (ADDRESS: host:port or a URL); OSError when unreachable."""
    url = address if "://" in address else f"http://{address}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse(resp.read().decode("utf-8", errors="replace"))
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise OSError(f"cannot scrape {url}: {exc}") from None


def scrape_all(addresses: Mapping[str, str] | Iterable[str], timeout: float = 2.0) -> dict[str, Samples | None]:
    """Scrapes several servers in parallel; an unreachable one maps to None."""
    items = dict(addresses) if isinstance(addresses, Mapping) else {a: a for a in addresses}

    def one(address: str) -> Samples | None:
        try:
            return scrape(address, timeout)
        except OSError:
            return None

    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return dict(zip(items, pool.map(one, items.values())))
