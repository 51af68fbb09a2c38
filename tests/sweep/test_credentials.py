"""URL passwords: masked wherever shown or stored, ${ENV_VAR} kept as a reference, resolved only to connect."""

from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

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
    (run_dir / "sweep.json").write_text(
        '{"parent_run_id": "p", "tracking_uri": "sqlite:///m.db", "experiment": "s", '
        '"storage": "postgresql://u:***@db/o"}'
    )
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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pa/ss@db/optuna", "postgresql+psycopg://u:***@db/optuna"),
        ("postgresql://u:a:b/c@db:5432/optuna", "postgresql://u:***@db:5432/optuna"),
        ("postgresql://u:50%off/x@db/optuna", "postgresql://u:***@db/optuna"),
        ("postgresql://u:p@ss@db/optuna", "postgresql://u:***@db/optuna"),  # SQLAlchemy reads 'p', urllib 'p@ss'
        ("postgresql://u:pa%20ss/x@db/optuna", "postgresql://u:***@db/optuna"),  # a space, percent-encoded
        ("postgresql://u:pa#s?s/x@db/optuna?sslmode=require", "postgresql://u:***@db/optuna?sslmode=require"),
        ("mysql://me@corp:s3cr/et@10.0.0.1:3306/db", "mysql://me@corp:***@10.0.0.1:3306/db"),
        ("redis://:pa/ss@cache:6379/0", "redis://:***@cache:6379/0"),
        ("http://alice:pa/ss@[::1]:5000/", "http://alice:***@[::1]:5000/"),
    ],
)
def test_the_password_runs_to_the_last_at_before_the_host(url, shown):
    assert credentials.mask(url) == shown
    assert credentials.mask(f"error: cannot reach {url} (timeout)") == f"error: cannot reach {shown} (timeout)"
    assert credentials.has_literal_password(url) and not credentials.has_literal_password(shown)


def test_masking_covers_what_sqlalchemy_reads_as_the_password():
    from sqlalchemy.engine import make_url

    url = "postgresql+psycopg://sweep:pa/ss?x#y@db:5432/optuna?sslmode=require"
    real, shown = make_url(url), make_url(credentials.mask(url))
    assert real.password == "pa/ss?x#y" and shown.password == "***"
    assert (shown.username, shown.host, shown.port, shown.database, dict(shown.query)) == (
        real.username,
        real.host,
        real.port,
        real.database,
        dict(real.query),
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u@db/x?sslpassword=Key-Pass-1&sslmode=require",
            "postgresql://u@db/x?sslpassword=***&sslmode=require",
        ),
        ("http://mlflow:5000/api?access_token=eyJhbGc.x&run=1", "http://mlflow:5000/api?access_token=***&run=1"),
        ("http://m:5000/?API-Key=abc123&Password=s3&apikey=k1", "http://m:5000/?API-Key=***&Password=***&apikey=***"),
        (
            "s3://b/o?X-Amz-Signature=f00d&X-Amz-Security-Token=t0k&X-Amz-Date=1",
            "s3://b/o?X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Date=1",
        ),
        (
            "postgresql://db/x?sslrootcert=/etc/ca.pem&application_name=sweep",
            "postgresql://db/x?sslrootcert=/etc/ca.pem&application_name=sweep",
        ),
        ("postgresql://db/x?password=${PGPASSWORD}", "postgresql://db/x?password=${PGPASSWORD}"),
    ],
)
def test_credential_query_parameters_are_masked_by_key_whatever_the_case(url, shown):
    assert credentials.mask(url) == shown
    assert credentials.has_literal_password(url) is (url != shown)


def test_urls_inside_an_error_sentence_are_each_masked():
    message = (
        "(psycopg.OperationalError) connection to 'postgresql+psycopg://sweep:pa/ss@db:5432/optuna' failed; "
        "fallback x_mysql://u:a/b@h/x refused, see GET /api/2.0?token=Zq-91 (401)"
    )
    assert credentials.mask(message) == (
        "(psycopg.OperationalError) connection to 'postgresql+psycopg://sweep:***@db:5432/optuna' failed; "
        "fallback x_mysql://u:***@h/x refused, see GET /api/2.0?token=*** (401)"
    )


def test_submit_refuses_a_literal_password_with_a_slash():
    from sweep.ray.jobs import _literal_passwords

    def spec(storage):
        return validate_spec(
            {
                "name": "s",
                "trial": {"model": {"name_or_path": "tiny-bert"}},
                "space": {"seed": {"type": "int", "low": 0, "high": 3}},
                "execution": {"storage": storage},
            }
        )

    (problem,) = _literal_passwords(spec("postgresql+psycopg://sweep:pa/ss@db/optuna"))
    assert problem.startswith("execution.storage: the URL holds a password, which would travel with the job")
    assert _literal_passwords(spec("postgresql+psycopg://sweep:${PGPASSWORD}@db/optuna")) == []
    assert _literal_passwords(spec("postgresql+psycopg://sweep@db/optuna?sslpassword=${K}")) == []
    assert _literal_passwords(spec("postgresql+psycopg://sweep@db/optuna?sslpassword=k3y")) != []


def test_resolve_percent_encodes_an_env_password_inside_the_userinfo(monkeypatch):
    from sqlalchemy.engine import make_url

    value = "Pa/ss: 50%@#w0rd"
    monkeypatch.setenv("FSWEEP_T_SPACE", value)
    real = credentials.resolve("postgresql://me@corp:${FSWEEP_T_SPACE}@db:5432/optuna", "execution.storage")
    assert real == "postgresql://me@corp:Pa%2Fss%3A%2050%25%40%23w0rd@db:5432/optuna"
    assert make_url(real).password == value and make_url(real).host == "db"
    assert credentials.mask(real) == "postgresql://me@corp:***@db:5432/optuna"
    assert credentials.mask(f"FATAL: password {value!r} rejected") == "FATAL: password '***' rejected"
    # outside the userinfo (a path, an ordinary parameter) the value is used as it is
    monkeypatch.setenv("FSWEEP_T_DIR", "/tmp/a b")
    assert (
        credentials.resolve("sqlite:///${FSWEEP_T_DIR}/optuna.db", "execution.storage")
        == "sqlite:////tmp/a b/optuna.db"
    )


def test_without_credentials_drops_a_userinfo_with_a_slash_and_masks_tokens():
    assert credentials.without_credentials("http://alice:pa/ss@mlflow:5000/") == "http://mlflow:5000/"
    assert credentials.without_credentials("http://mlflow:5000/?token=t0k3n") == "http://mlflow:5000/?token=***"
    assert credentials.without_credentials("sqlite:////tmp/a@b/x.db") == "sqlite:////tmp/a@b/x.db"


_HOSTS = ["db", "mlflow.internal", "10.0.0.7", "[::1]"]
_REST = ["", "/", "/optuna", "/optuna?sslmode=require", "/a/b.db"]


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["postgresql+psycopg", "mysql", "http", "https", "redis"]),
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", max_size=8),
    password=st.text(
        alphabet=st.one_of(  # a literal space is no URL: it is written %20 (the rows above)
            st.sampled_from("/:%@#?&=+;,'\"[]!$*~"),
            st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")).filter(str.isprintable),
        ),
        min_size=1,
        max_size=24,
    ),
    host=st.sampled_from(_HOSTS),
    port=st.sampled_from(["", ":5432", ":5000"]),
    rest=st.sampled_from(_REST),
)
def test_a_masked_url_never_shows_its_password_and_keeps_its_address(scheme, user, password, host, port, rest):
    url = f"{scheme}://{user}:{password}@{host}{port}{rest}"
    shown = f"{scheme}://{user}:***@{host}{port}{rest}"
    assume(not password.startswith("${") and password != credentials.MASK)  # a reference / already masked
    assume(len(password) < 4 or password not in f"error: cannot reach {shown} (refused)")
    masked = credentials.mask(f"error: cannot reach {url} (refused)")
    assert masked == f"error: cannot reach {shown} (refused)"
    assert len(password) < 4 or password not in masked
    assert credentials.has_literal_password(url)
    address, parts = f"{scheme}://{host}{port}{rest}", urlsplit(shown)
    expected = urlsplit(address)
    assert (parts.scheme, parts.hostname, parts.port, parts.path, parts.query) == (
        expected.scheme,
        expected.hostname,
        expected.port,
        expected.path,
        expected.query,
    )
    assert credentials.without_credentials(url) == address
