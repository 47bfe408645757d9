"""A worker gives the model's CPU work half the host's cores (`VLMQ_MODEL_CPU_THREADS`),
leaving the rest to the service's own processes."""

from __future__ import annotations

import pytest

from services.core.config import Settings
from tests.support import python_stdout
from workers.cpu_threads import model_cpu_threads


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (16, 8)])
def test_the_model_gets_half_the_cores_at_least_one(cores: int, threads: int) -> None:
    assert model_cpu_threads(settings(), cores=cores) == threads


def test_the_setting_wins_over_the_cores() -> None:
    assert model_cpu_threads(settings(model_cpu_threads=3), cores=16) == 3


# One thread when torch loads later (torch caps its pool's size from the environment at the
# host's cores, and this host has more than one), three when torch was loaded before.
@pytest.mark.parametrize(("torch_first", "threads"), [(False, 1), (True, 3)])
def test_torch_runs_with_the_threads_given_whether_imported_before_or_after(
    torch_first: bool, threads: int
) -> None:
    # In a process of its own: torch's pool is sized once per process.
    check = (
        ("import torch; " if torch_first else "")
        + "from services.core.config import Settings; "
        + "from workers.cpu_threads import limit_model_threads; "
        + f"limit_model_threads(Settings(_env_file=None, model_cpu_threads={threads})); "
        + "import torch, threading; seen = []; "
        + "worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads())); "
        + "worker.start(); worker.join(); print(torch.get_num_threads(), seen[0])"
    )
    # The model runs in the scheduler's thread, not the one that sized the pool.
    assert python_stdout(check).split() == [str(threads), str(threads)]
