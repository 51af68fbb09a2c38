from types import SimpleNamespace

from sweep.spec import validate_spec
from sweep.summary import acceptance_line, summary_rows


def _spec(direction, threshold):
    return validate_spec(
        {
            "name": "r",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "objective": {"metric": "val_accuracy" if direction == "maximize" else "val_loss", "direction": direction},
            "acceptance": {"threshold": threshold},
        }
    )


def test_acceptance_follows_the_objective_direction():
    assert acceptance_line(_spec("maximize", 0.8), 0.85) == (
        "acceptance: best val_accuracy 0.85 >= threshold 0.8: reached"
    )
    assert acceptance_line(_spec("maximize", 0.8), 0.7) == (
        "acceptance: best val_accuracy 0.7 < threshold 0.8: not reached"
    )
    assert acceptance_line(_spec("minimize", 0.3), 0.25) == "acceptance: best val_loss 0.25 <= threshold 0.3: reached"
    assert acceptance_line(_spec("minimize", 0.3), None).endswith("not reached")


def test_summary_rows_put_completed_best_first():
    def trial(n, status, value):
        return SimpleNamespace(
            number=n,
            status=status,
            step=10,
            value=value,
            params={"optim.learning_rate": 0.001},
        )

    result = SimpleNamespace(trials=[trial(0, "completed", 0.7), trial(1, "pruned", 0.9), trial(2, "completed", 0.8)])
    rows = summary_rows(_spec("maximize", 0.8), result)
    assert [r[0] for r in rows] == ["2", "0", "1"]
    assert rows[0] == ["2", "completed", "10", "0.8", "learning_rate=0.001"]
