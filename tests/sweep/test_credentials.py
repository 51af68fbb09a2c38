"""URL passwords: masked wherever shown or stored, ${ENV_VAR} kept as a reference, resolved only to connect."""

import pytest

from sweep import credentials
from sweep.cli import main
from sweep.spec import validate_spec


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://sweep:hunter22@db:5432/optuna", "postgresql+psycopg://sweep:***@db:5432/optuna"),
        ("http://alice:p%40ss:w0rd@mlflow:5000", "http://alice:***@mlflow:5000"),
        ("postgresql://sweep:${PGPASSWORD}@db/optuna", "postgresql://sweep:${PGPASSWORD}@db/optuna"),
        ("mysql://u@db/x?password=topsecret&ssl=1", "mysql://u@db/x?password=***&ssl=1"),
        ("sqlite:////tmp/runs/x/optuna.db", "sqlite:////tmp/runs/x/optuna.db"),
        ("postgresql://sweep@db/optuna", "postgresql://sweep@db/optuna"),
    ],
)
def test_mask_hides_passwords_and_keeps_references(url, shown):
    assert credentials.mask(url) == shown
    assert credentials.mask(f"error: cannot reach {url} (timeout)") == f"error: cannot reach {shown} (timeout)"


def test_a_password_expanded_once_is_masked_anywhere_it_appears_later(monkeypatch):
    monkeypatch.setenv("FSWEEP_T_PW", "Zebra-Crossing-91")
    real = credentials.resolve("postgresql://u:${FSWEEP_T_PW}@db/x", "execution.storage")
    assert real == "postgresql://u:Zebra-Crossing-91@db/x"
    assert credentials.mask("password authentication failed for Zebra-Crossing-91") == (
        "password authentication failed for ***"
    )


def test_resolve_expands_env_and_refuses_masked_or_unset(monkeypatch):
    monkeypatch.delenv("FSWEEP_T_UNSET", raising=False)
    with pytest.raises(credentials.SecretError, match=r"^tracking.uri: \$\{FSWEEP_T_UNSET\} is not set .*export"):
        credentials.resolve("http://u:${FSWEEP_T_UNSET}@h:5000", "tracking.uri")
    with pytest.raises(credentials.SecretError, match=r"^execution.storage: the password of .* was not stored; pass"):
        credentials.resolve("postgresql://u:***@elsewhere/x", "execution.storage")
    # a masked URL this process resolved itself gives back the real one (the verdict at a sweep's end)
    real = credentials.resolve("postgresql://u:Quartz-Lamp-55@db/y", "execution.storage")
    assert credentials.resolve(credentials.mask(real), "execution.storage") == real


def test_without_credentials_gives_an_address_to_open():
    assert credentials.without_credentials("http://alice:pw@mlflow:5000/") == "http://mlflow:5000/"
    assert credentials.without_credentials("http://mlflow:5000") == "http://mlflow:5000"


def test_the_stored_spec_masks_both_urls():
    spec = validate_spec(
        {
            "name": "s",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "space": {"seed": {"type": "int", "low": 0, "high": 3}},
            "execution": {"storage": "postgresql://u:Velvet-Moon-3@db/o"},
            "tracking": {"uri": "http://a:Velvet-Moon-4@m:5000"},
        }
    )
    stored = spec.stored()
    assert stored["execution"]["storage"] == "postgresql://u:***@db/o"
    assert stored["tracking"]["uri"] == "http://a:***@m:5000"
    assert spec.execution.storage == "postgresql://u:Velvet-Moon-3@db/o"  # the live spec keeps it to connect


def test_resume_of_a_run_dir_whose_password_was_not_stored_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "s" / "20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.json").write_text("{}")
    (run_dir / "spec.yaml").write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}}\nspace: {seed: {type: int, low: 0, high: 3}}\n"
        "execution: {storage: 'postgresql://u:***@db/o', runs_dir: '" + str(tmp_path / "runs") + "'}\n"
        "tracking: {uri: 'sqlite:///" + str(tmp_path / "m.db") + "'}\n"
    )
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: execution.storage: the password of 'postgresql://u:***@db/o' was not stored")
    assert err.count("\n") == 1


def test_env_passwords_with_url_characters_are_encoded_and_still_masked(monkeypatch):
    monkeypatch.setenv("FSWEEP_T_ODD", "ab/c#d@e%f")
    real = credentials.resolve("postgresql://u:${FSWEEP_T_ODD}@db:5432/x", "execution.storage")
    assert real == "postgresql://u:ab%2Fc%23d%40e%25f@db:5432/x"
    assert credentials.mask(real) == "postgresql://u:***@db:5432/x"
    assert credentials.mask("could not connect with ab/c#d@e%f") == "could not connect with ***"
    # outside the password the value is used as it is
    monkeypatch.setenv("FSWEEP_T_HOST", "db.internal")
    assert (
        credentials.resolve("postgresql://u@${FSWEEP_T_HOST}/x", "execution.storage") == "postgresql://u@db.internal/x"
    )


@pytest.mark.integration  # a real `sweep run`: Ray starts beside the record's opening
def test_an_unreachable_tracking_server_does_not_print_its_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}, data: {max_rows: 40}}\n"
        "space: {seed: {type: int, low: 0, high: 3}}\n"
        f"execution: {{runs_dir: '{tmp_path / 'runs'}'}}\n"
        "tracking: {uri: 'http://alice:Unreachable-Pw-77@127.0.0.1:9'}\n"
    )
    code = main(["run", str(spec)])
    err = capsys.readouterr()
    assert code == 1
    assert "Unreachable-Pw-77" not in err.out + err.err
    assert "alice:***@127.0.0.1:9" in err.err  # the traceback is there, masked
