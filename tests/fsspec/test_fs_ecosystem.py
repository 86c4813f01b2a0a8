"""pandas and pyarrow reading and writing through chainfs:// URLs (no import of chainfs needed)."""

from __future__ import annotations

import pytest

from chainfs.client.fsspec.fs import ChainFileSystem
from chainfs.cluster import LocalCluster

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.integration


def frame():
    n = 50_000
    return pd.DataFrame({"id": range(n), "x": [i * 0.5 for i in range(n)], "name": [f"row{i}" for i in range(n)]})


def test_pandas_csv_round_trip(cluster: LocalCluster, base: str) -> None:
    url = f"{cluster.url}{base}/data/frame.csv"
    df = frame()
    df.to_csv(url, index=False)
    pd.testing.assert_frame_equal(pd.read_csv(url), df)


def test_pandas_and_pyarrow_parquet_round_trip(cluster: LocalCluster, cfs: ChainFileSystem, base: str) -> None:
    url = f"{cluster.url}{base}/data/frame.parquet"
    df = frame()
    df.to_parquet(url, index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(url), df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, f"{base}/data/t.parquet", filesystem=cfs, row_group_size=10_000)
    back = pq.read_table(f"{base}/data/t.parquet", filesystem=cfs, columns=["id", "name"])
    assert back.num_rows == len(df) and back.column("name").to_pylist()[-1] == "row49999"
    assert pq.ParquetFile(cfs.open(f"{base}/data/t.parquet")).metadata.num_row_groups == 5
