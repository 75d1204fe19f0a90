"""Streaming img2dataset shards: sequential reads, every decodable image once per epoch, corrupt ones
skipped and counted, the same number of batches on every process, and a training run on them."""

import io
import json
import tarfile

import pytest
import torch

from egg_zoo_discritune.data_loaders.streaming import ShardStream, find_shards, stream_loader
from egg_zoo_discritune.engine.distributed import DistributedContext
from egg_zoo_discritune.train import main as train
from tests.tiny_assets import COLOURS, SHAPES, draw_image
from tests.test_train import _argv


def _png(tmp_path, i):
    path = tmp_path / "draw.png"
    draw_image(path, list(COLOURS)[i % 4], SHAPES[i // 4 % 2])
    return path.read_bytes()


def write_shards(root, sizes, corrupt=None):
    """img2dataset webdataset shards ``NNNNN.tar`` (keys ``SSSSSIIII``), with ``.txt`` captions;
    ``corrupt``: the key whose image bytes are garbage. Shard 0 gets img2dataset's stats file."""
    root.mkdir(parents=True)
    for shard, size in enumerate(sizes):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as archive:
            for i in range(size):
                key = f"{shard:05d}{i:04d}"
                for name, data in ((f"{key}.jpg", b"garbage" if key == corrupt else _png(root, shard * 7 + i)),
                                   (f"{key}.txt", f"caption {key}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    (root / "00000_stats.json").write_text(json.dumps({"count": sizes[0], "successes": sizes[0]}))
    (root / "draw.png").unlink()
    return root


def _pixels(image):
    return torch.tensor(image.size, dtype=torch.float)


def test_one_epoch_reads_every_decodable_image_once(tmp_path):
    shards = find_shards(write_shards(tmp_path / "train", [4, 5, 4], corrupt="000010002"))
    stream = ShardStream(shards, _pixels, batch_size=4, seed=0, shuffle_buffer=3)
    assert stream.n_images == 13 and len(stream_loader(stream)) == 3
    expected = {int(f"{s:05d}{i:04d}") for s, n in enumerate([4, 5, 4]) for i in range(n)} - {10002}
    epochs = [[b[1].tolist() for b in stream_loader(stream)] for _ in range(2)]
    for batches in epochs:
        assert [len(b) for b in batches] == [4, 4, 4]
        assert {label for b in batches for label in b} == expected
    assert epochs[0] != epochs[1]  # a new order every epoch
    assert stream.n_undecodable == 2  # the corrupt image, once per epoch
    workers = ShardStream(shards, _pixels, batch_size=4, seed=0, shuffle_buffer=3, num_workers=2)
    batches = [b[1].tolist() for b in stream_loader(workers, num_workers=2)]
    assert len(batches) == 3 and len({label for b in batches for label in b}) == 12


def test_every_process_yields_the_same_number_of_batches(tmp_path, monkeypatch):
    shards = find_shards(write_shards(tmp_path / "train", [4, 4, 4]))
    per_rank = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in range(2):  # what torchrun sets, and webdataset's node splitter reads
        monkeypatch.setenv("RANK", str(rank))
        per_rank.append([b[1].tolist() for b in stream_loader(ShardStream(
            shards, _pixels, batch_size=4, seed=1, context=DistributedContext(rank, rank, 2), shuffle_buffer=2))])
    # 12 images = 3 global batches of 4; the rank dealt one shard reads it again to fill its 3 halves.
    assert [len(batches) for batches in per_rank] == [3, 3]
    assert all(len(b) == 2 for batches in per_rank for b in batches)
    assert {label // 10_000 for label in per_rank[0][0]}.isdisjoint({label // 10_000 for label in per_rank[1][0]})
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="webdataset sees process 0 of 2"):
        next(iter(ShardStream(shards, _pixels, batch_size=4, seed=1, context=DistributedContext(1, 1, 2))))


def test_the_files_layout_streams_too(tmp_path):
    root = write_shards(tmp_path / "tars", [3, 3])
    for tar in sorted(root.glob("*.tar")):
        folder = tmp_path / "files" / tar.stem
        folder.mkdir(parents=True)
        with tarfile.open(tar) as archive:
            archive.extractall(folder, filter="data")
    stream = ShardStream(find_shards(tmp_path / "files"), _pixels, batch_size=3, seed=0, shuffle_buffer=2)
    labels = sorted(label for b in stream_loader(stream) for label in b[1].tolist())
    assert labels == [0, 1, 2, 10_000, 10_001, 10_002]


def test_training_streams_conceptual_shards(tiny, tmp_path):
    train_shards = write_shards(tmp_path / "cc" / "train", [4, 4], corrupt="000000001")
    val_shards = write_shards(tmp_path / "cc" / "val", [4])
    argv = _argv(tiny, tmp_path / "run", "--n_epochs", "1")
    argv[argv.index("--dataset") + 1] = "conceptual"
    argv[argv.index("--annotations"):argv.index("--annotations") + 2] = []
    run_dir = train([*argv, "--stream", "--data_root", str(train_shards), "--val_annotations", str(val_shards),
                     "--shuffle_buffer", "4"])
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in records] == ["train_step", "train_step", "train", "test"]
