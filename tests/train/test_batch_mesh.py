"""A global batch the mesh cannot split fails at start-up, naming the settings to change."""

import pytest
from support.train_helpers import smoke_config

from easylm_imitate import parallel


@pytest.mark.parametrize("batch_size,accum,mesh_spec,ok", [
    (8, 1, "dp:2,fsdp:4,tp:1", True),
    (16, 2, "dp:1,fsdp:8,tp:1", True),
    (8, 1, "dp:1,fsdp:2,tp:4", True),  # tp does not split the batch
    (12, 1, "dp:1,fsdp:8,tp:1", False),
    (8, 1, "dp:2,fsdp:2,tp:2", True),
    (8, 2, "dp:1,fsdp:8,tp:1", False),  # micro-batches of 4 rows over 8 batch shards
    (6, 4, "dp:1,fsdp:1,tp:8", False),  # not a multiple of grad_accum_steps
])
def test_batch_must_split_over_the_batch_axes(batch_size, accum, mesh_spec, ok):
    mesh = parallel.make_mesh(mesh_spec)
    if ok:
        parallel.check_batch_fits_mesh(batch_size, accum, mesh)
        return
    with pytest.raises(ValueError, match=rf"batch_size {batch_size} with grad_accum_steps {accum} on mesh"):
        parallel.check_batch_fits_mesh(batch_size, accum, mesh)


def test_trainer_stops_before_the_first_step(tmp_path):
    from easylm_imitate.train.trainer import train

    cfg = smoke_config(**{"batch_size": 12, "mesh": "dp:1,fsdp:8,tp:1", "total_steps": 2})
    with pytest.raises(ValueError) as err:
        train(cfg, str(tmp_path), log=lambda *_: None)
    message = str(err.value)
    for part in ("batch_size 12", "grad_accum_steps 1", "'fsdp': 8", "multiple of 8"):
        assert part in message, message
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
