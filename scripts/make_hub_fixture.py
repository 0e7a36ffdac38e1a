"""Writes a fake Hugging Face hub cache with tiny Parquet files in the layout of the real datasets
(stanfordnlp/sst2, fancyzhx/ag_news, fancyzhx/amazon_polarity), for crates/pez-tasks/tests/sources.rs.

    python3 scripts/make_hub_fixture.py        (needs pyarrow: pip install pyarrow)

Each split's rows say which split they are ("val ..." for SST-2's validation, "test ..." for the test files) so the
test can check the split mapping; labels follow the hub's integer columns.
"""
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/pez-tasks/tests/fixtures/hub"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write(repo, files):
    d = OUT / f"datasets--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs/main").write_text(COMMIT)  # no newline, as the hub client writes it
    for name, table in files.items():
        p = d / "snapshots" / COMMIT / name
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, p)  # snappy, pyarrow's default, as the hub's files


if OUT.exists():
    shutil.rmtree(OUT)
write("stanfordnlp/sst2", {
    "data/train-00000-of-00001.parquet": pa.table({
        "idx": pa.array([0, 1, 2, 3, 4, 5], pa.int32()),
        "sentence": ["a gorgeous film", "dull and flat", "witty", "a mess", "moving", "tedious"],
        "label": pa.array([1, 0, 1, 0, 1, 0], pa.int64()),
    }),
    "data/validation-00000-of-00001.parquet": pa.table({
        "idx": pa.array([0, 1, 2], pa.int32()),
        "sentence": ["val a delight", "val a bore", "val fine work"],
        "label": pa.array([1, 0, 1], pa.int64()),
    }),
    "data/test-00000-of-00001.parquet": pa.table({
        "idx": pa.array([0], pa.int32()), "sentence": ["hidden"], "label": pa.array([-1], pa.int64()),
    }),
})
write("fancyzhx/ag_news", {
    "data/train-00000-of-00001.parquet": pa.table({
        "text": ["war news", "cup final", "stocks fall", "new chip", "summit", "goal", "merger", "rocket"],
        "label": pa.array([0, 1, 2, 3, 0, 1, 2, 3], pa.int64()),
    }),
    "data/test-00000-of-00001.parquet": pa.table({
        "text": ["test world", "test sports", "test business", "test tech"],
        "label": pa.array([0, 1, 2, 3], pa.int64()),
    }),
})
write("fancyzhx/amazon_polarity", {
    "amazon_polarity/train-00000-of-00004.parquet": pa.table({
        "label": pa.array([1, 0], pa.int64()), "title": ["Great", "Bad"], "content": ["loved it", "broke fast"],
    }),
    "amazon_polarity/test-00000-of-00001.parquet": pa.table({
        "label": pa.array([0, 1, 1], pa.int64()), "title": ["test Awful", "test Fine", ""], "content": ["no", "yes", "test only content"],
    }),
})
print("wrote", OUT)
