"""deploy.sh, offline: the dry run's commands and staging, and its refusals.

``gcloud`` on the PATH is a fake that records every call, so no test here can
reach Google Cloud; the dry-run tests assert it was never called at all.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from shared import config
from shared.partitions import subscription_filter, subscription_of
from shared.platforms import PLATFORMS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy.sh"
PROJECT = "demo-test"
SECRET = "some-secret-value"
TRACK_SA = f"o7tracker-track@{PROJECT}.iam.gserviceaccount.com"
ADMIN_SA = f"o7tracker-admin@{PROJECT}.iam.gserviceaccount.com"
AGGREGATE_SA = f"o7tracker-aggregate@{PROJECT}.iam.gserviceaccount.com"
SCHEDULER_SA = f"o7tracker-scheduler@{PROJECT}.iam.gserviceaccount.com"
SHARED_SA = f"o7tracker-functions@{PROJECT}.iam.gserviceaccount.com"
PUBSUB_AGENT = "service-<project-number>@gcp-sa-pubsub.iam.gserviceaccount.com"

# name -> (entry point, folder under functions/, flags its deploy line must carry)
FUNCTIONS = {
    "track": ("track", "track", {
        "--trigger-http", "--allow-unauthenticated", "--set-secrets=CAMPAIGN_ID_KEY=o7tracker-campaign-id-key:1",
    }),
    "admin": ("admin", "admin", {
        "--trigger-http", "--allow-unauthenticated",
        "--set-secrets=AUTH_PASSWORD=o7tracker-admin-password:latest,CAMPAIGN_ID_KEY=o7tracker-campaign-id-key:1",
    }),
    "aggregate-event": ("aggregate_event", "aggregate", {"--trigger-topic=o7-clicks", "--retry"}),
    "aggregate-http": ("aggregate_http", "aggregate", {"--trigger-http", "--no-allow-unauthenticated"}),
}
# name -> settings its --set-env-vars must hold
FUNCTION_ENV = {
    "track": {f"GOOGLE_CLOUD_PROJECT={PROJECT}", "CLICKS_TOPIC=o7-clicks", "FALLBACK_URL=http://outfit7.com",
              "AGGREGATE_PARTITIONS=1", "WORKERS=1"},
    "admin": {f"GOOGLE_CLOUD_PROJECT={PROJECT}", "AUTH_USER=admin"},
    "aggregate-event": {f"GOOGLE_CLOUD_PROJECT={PROJECT}", "AGGREGATE_PARTITIONS=1"},
    "aggregate-http": {f"GOOGLE_CLOUD_PROJECT={PROJECT}", "CLICKS_SUBSCRIPTION=o7-clicks-aggregate",
                       "DEAD_LETTER_SUBSCRIPTION=o7-clicks-dead-letter-review", "AGGREGATE_MODE=both",
                       "AGGREGATE_MAX_SECONDS=50", "AGGREGATE_PARTITIONS=1"},
}

# A stand-in for gcloud: logs its arguments, keeps what it got on stdin for
# the secret commands, notes whether AUTH_PASSWORD reached its environment,
# answers describe commands as if nothing existed yet (but what FAKE_GCLOUD_EXISTS
# names, ';'-separated, and the functions every deploy makes, described for their
# URL), lists FAKE_GCLOUD_FUNCTIONS as the functions found and the subscriptions
# FAKE_GCLOUD_EXISTS describes as the subscriptions found, and succeeds otherwise.
# An existing subscription is described without a filter.
FAKE_GCLOUD = """#!/bin/sh
call="$*"
printf '%s\\n' "$call" >> "$FAKE_GCLOUD_DIR/calls"
[ -z "${AUTH_PASSWORD:-}" ] || echo leaked >> "$FAKE_GCLOUD_DIR/env-leaks"
case "$1 $2 $3" in
  "projects describe "*) echo 123456789; exit 0 ;;
  "functions describe aggregate-event") ;;
  "functions describe "*) echo https://aggregate-http-abc123-ew.a.run.app; exit 0 ;;
  "functions list "*) printf '%s' "${FAKE_GCLOUD_FUNCTIONS:-}"; exit 0 ;;
  "pubsub subscriptions list")
    IFS=';'
    for existing in ${FAKE_GCLOUD_EXISTS:-}; do
      case "$existing" in "pubsub subscriptions describe "*)
        name="${existing#pubsub subscriptions describe }"; echo "${name% }" ;;
      esac
    done
    exit 0 ;;
  "secrets create "*) cat >> "$FAKE_GCLOUD_DIR/stdin-$3"; exit 0 ;;
  "secrets versions "*) cat >> "$FAKE_GCLOUD_DIR/stdin-$4"; exit 0 ;;
esac
IFS=';'
for existing in ${FAKE_GCLOUD_EXISTS:-}; do
  case "$call" in *"$existing"*) exit 0 ;; esac
done
for word in "$2" "$3" "$4"; do
  if [ "$word" = describe ]; then exit 1; fi
done
exit 0
"""


@pytest.fixture
def fake_gcloud(tmp_path: Path) -> Path:
    """A directory holding the fake ``gcloud``; its calls land in ``calls`` beside it."""
    directory = tmp_path / "fake-gcloud"
    directory.mkdir()
    script = directory / "gcloud"
    script.write_text(FAKE_GCLOUD)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def run_deploy(
    fake_gcloud: Path, *args: str, env: dict[str, str] | None = None, script: Path = DEPLOY
) -> subprocess.CompletedProcess[str]:
    # A clean environment, so a developer's own settings cannot leak in.
    environment = {
        "PATH": f"{fake_gcloud}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(fake_gcloud),
        "TMPDIR": str(fake_gcloud),
        "FAKE_GCLOUD_DIR": str(fake_gcloud),
        **(env or {}),
    }
    return subprocess.run(
        [str(script), *args], cwd=script.parent, env=environment,
        capture_output=True, text=True, timeout=60, check=False,
    )


def commands(stdout: str) -> list[list[str]]:
    """The printed gcloud commands as argument lists, without the leading ``gcloud``."""
    result = []
    for line in stdout.splitlines():
        if not line.startswith("+ "):
            continue
        words = shlex.split(line[2:])
        while "|" in words:  # printf '%s' <redacted> | gcloud ..., head ... | base64 | gcloud ...
            words = words[words.index("|") + 1:]
        assert words[0] == "gcloud", line
        result.append(words[1:])
    return result


def find(cmds: list[list[str]], *prefix: str) -> list[list[str]]:
    return [c for c in cmds if c[: len(prefix)] == list(prefix)]


def the_one(cmds: list[list[str]], *prefix: str) -> set[str]:
    found = find(cmds, *prefix)
    assert len(found) == 1, f"expected one `gcloud {' '.join(prefix)}`, got {found}"
    return set(found[0])


def env_vars(flags: set[str]) -> set[str]:
    values = [f.removeprefix("--set-env-vars=") for f in flags if f.startswith("--set-env-vars=")]
    assert len(values) == 1, flags
    return set(values[0].split(","))


@pytest.fixture
def dry_run(fake_gcloud: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    stage = tmp_path / "stage"
    result = run_deploy(
        fake_gcloud, "--dry-run",
        env={"GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(stage),
             "AGGREGATE_MODE": "both"},
    )
    return result, stage


def test_dry_run_prints_every_command_and_never_calls_gcloud(dry_run, fake_gcloud):
    result, stage = dry_run
    assert result.returncode == 0, result.stderr
    assert not (fake_gcloud / "calls").exists(), "the dry run called gcloud"
    cmds = commands(result.stdout)

    for name, (entry_point, _, trigger_flags) in FUNCTIONS.items():
        flags = the_one(cmds, "functions", "deploy", name)
        assert {
            "--gen2", "--runtime=python312", f"--entry-point={entry_point}", "--region=europe-west1",
            f"--project={PROJECT}", f"--source={stage / name}",
        } <= flags
        assert trigger_flags <= flags, name
        assert FUNCTION_ENV[name] <= env_vars(flags), name

    assert find(cmds, "pubsub", "topics", "create", "o7-clicks")
    assert find(cmds, "pubsub", "topics", "create", "o7-clicks-dead-letter")
    assert {
        "--topic=o7-clicks", "--ack-deadline=60", "--message-retention-duration=7d",
        "--dead-letter-topic=o7-clicks-dead-letter", "--max-delivery-attempts=10",
        f"--message-filter={subscription_filter(0)}",
    } <= the_one(cmds, "pubsub", "subscriptions", "create", "o7-clicks-aggregate")

    assert "--data-file=-" in the_one(cmds, "secrets", "create", "o7tracker-admin-password")
    assert "--data-file=-" in the_one(cmds, "secrets", "create", "o7tracker-campaign-id-key")
    assert "<redacted>" in result.stdout

    # Producers' ledgers, the dedup records of schema 1 events, the visitor salts and Idempotency-Key
    # records expire; nothing indexes the field.
    for command, flag in ((("fields", "ttls"), "--enable-ttl"), (("indexes", "fields"), "--disable-indexes")):
        found = find(cmds, "firestore", *command, "update", "expire_at")
        assert all(flag in c for c in found)
        assert sorted(g for c in found for g in c if g.startswith("--collection-group=")) == [
            "--collection-group=clicks", "--collection-group=idempotency", "--collection-group=producers",
            "--collection-group=salts"]

    job = the_one(cmds, "scheduler", "jobs", "create", "http")
    assert {
        "--schedule=* * * * *", "--http-method=POST", "--location=europe-west1",
        f"--oidc-service-account-email={SCHEDULER_SA}",
    } <= job
    assert f"--member=serviceAccount:{SCHEDULER_SA}" in the_one(
        cmds, "functions", "add-invoker-policy-binding", "aggregate-http")

    # Creation is guarded: a describe decides whether the resource is missing.
    for kind in (("pubsub", "topics"), ("pubsub", "subscriptions"), ("secrets",)):
        assert find(cmds, *kind, "describe")


def test_dry_run_never_shows_the_password(dry_run):
    result, _ = dry_run
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr


def test_dry_run_stages_each_function_with_the_shared_package(dry_run):
    result, stage = dry_run
    assert result.returncode == 0, result.stderr
    for name, (entry_point, folder, _) in FUNCTIONS.items():
        source = stage / name
        for required in ("main.py", "requirements.txt", "shared/__init__.py", "shared/config.py"):
            assert (source / required).is_file(), f"{name}: {required} not staged"
        assert f"def {entry_point}(" in (source / "main.py").read_text()
        for module in (ROOT / "functions" / folder).glob("*.py"):
            assert (source / module.name).is_file(), f"{name}: {module.name} not staged"
        assert not list(source.rglob("__pycache__")), name
        assert not list(source.rglob("*.pyc")), name


def test_staging_leaves_out_bytecode_caches(fake_gcloud, tmp_path):
    """Against a copy of the repository with caches planted where Python leaves them."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "functions", repo / "functions", ignore=ignore)
    shutil.copytree(ROOT / "shared", repo / "shared", ignore=ignore)
    shutil.copy2(DEPLOY, repo / "deploy.sh")
    for cache in ("functions/track/__pycache__", "functions/aggregate/__pycache__", "shared/__pycache__"):
        (repo / cache).mkdir()
        (repo / cache / "main.cpython-312.pyc").write_bytes(b"\0")
    (repo / "functions" / "admin" / "stray.pyc").write_bytes(b"\0")

    stage = tmp_path / "stage"
    result = run_deploy(
        fake_gcloud, "--dry-run", script=repo / "deploy.sh",
        env={"GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(stage),
             "AGGREGATE_MODE": "both"},
    )
    assert result.returncode == 0, result.stderr
    assert not (fake_gcloud / "calls").exists()
    for name in FUNCTIONS:
        assert (stage / name / "shared" / "config.py").is_file()
    assert not list(stage.rglob("__pycache__"))
    assert not list(stage.rglob("*.pyc"))


def test_refuses_a_real_deploy_without_a_project(fake_gcloud):
    result = run_deploy(fake_gcloud, env={"AUTH_PASSWORD": SECRET})
    assert result.returncode != 0
    assert "no Google Cloud project" in result.stderr
    assert "GOOGLE_CLOUD_PROJECT" in result.stderr and "--project" in result.stderr
    assert not (fake_gcloud / "calls").exists(), "gcloud was called without a project"
    assert "+ " not in result.stdout


def test_project_flag_and_help(fake_gcloud, tmp_path):
    result = run_deploy(fake_gcloud, "--dry-run", "--project=from-flag",
                        env={"DEPLOY_STAGE_DIR": str(tmp_path / "stage")})
    assert result.returncode == 0, result.stderr
    deploys = find(commands(result.stdout), "functions", "deploy")
    assert all("--project=from-flag" in c for c in deploys)
    # by default only the scheduled drain aggregates: hot campaigns stay within Firestore's write rate
    assert sorted(c[2] for c in deploys) == ["admin", "aggregate-http", "track"]

    result = run_deploy(fake_gcloud, "--help")
    assert result.returncode == 0 and "Usage: ./deploy.sh" in result.stdout
    assert not (fake_gcloud / "calls").exists()


def test_real_run_pipes_the_password_and_wires_the_scheduler(fake_gcloud, tmp_path):
    """A full run against the fake gcloud, which reports every resource missing."""
    result = run_deploy(fake_gcloud, env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"),
        "AGGREGATE_MODE": "both",
    })
    assert result.returncode == 0, result.stderr
    calls = (fake_gcloud / "calls").read_text().splitlines()
    assert all(SECRET not in call for call in calls)
    assert SECRET not in result.stdout + result.stderr
    assert (fake_gcloud / "stdin-o7tracker-admin-password").read_text() == SECRET
    id_key = (fake_gcloud / "stdin-o7tracker-campaign-id-key").read_text().strip()
    assert len(base64.b64decode(id_key, validate=True)) == 32  # random bytes, so 256 bits of key
    assert not (fake_gcloud / "env-leaks").exists(), "AUTH_PASSWORD reached gcloud's environment"

    def index(prefix: str) -> int:
        return next(i for i, call in enumerate(calls) if call.startswith(prefix))

    assert index("pubsub topics create o7-clicks ") < index("functions deploy aggregate-event ")
    assert index("secrets create o7tracker-admin-password ") < index("functions deploy admin ")
    assert index("secrets create o7tracker-campaign-id-key ") < index("functions deploy track ")
    assert index("functions deploy aggregate-http ") < index("scheduler jobs create http ")
    # what reads click events is deployed before what writes them, so that no reader ignores a new field
    assert index("functions deploy aggregate-event ") < index("functions deploy aggregate-http ") < \
        index("functions deploy track ")
    url = "https://aggregate-http-abc123-ew.a.run.app"
    job = calls[index("scheduler jobs create http ")].split()
    assert f"--uri={url}" in job and f"--oidc-token-audience={url}" in job
    agent = "serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com"
    assert any(c.startswith("pubsub topics add-iam-policy-binding o7-clicks-dead-letter ") and agent in c
               for c in calls)


def test_event_mode_schedules_the_run_that_refreshes_totals_but_not_the_drain(fake_gcloud, tmp_path):
    result = run_deploy(fake_gcloud, "--dry-run", env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"), "AGGREGATE_MODE": "event"})
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert sorted(c[2] for c in find(cmds, "functions", "deploy")) == [
        "admin", "aggregate-event", "aggregate-http", "track"]
    assert "AGGREGATE_MODE=event" in env_vars(the_one(cmds, "functions", "deploy", "aggregate-http"))
    assert find(cmds, "scheduler", "jobs", "create")
    bad = run_deploy(fake_gcloud, "--dry-run", env={"AGGREGATE_MODE": "sometimes"})
    assert bad.returncode == 2 and "AGGREGATE_MODE" in bad.stderr


# mode -> (the functions it deploys, whether it makes the pull subscription)
MODES = {
    "scheduled": (["admin", "aggregate-http", "track"], True),
    "event": (["admin", "aggregate-event", "aggregate-http", "track"], False),
    "both": (["admin", "aggregate-event", "aggregate-http", "track"], True),
}


@pytest.mark.parametrize("mode", MODES)
def test_each_aggregate_mode_makes_only_the_paths_it_uses(fake_gcloud, tmp_path, mode):
    """The dry run deploys to an empty project, so it has nothing to delete, and no switch to refuse."""
    deployed, pull_subscription = MODES[mode]
    result = run_deploy(fake_gcloud, "--dry-run", env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"), "AGGREGATE_MODE": mode})
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    # first of all, what is deployed is looked up: the partitions, the paths a switch would delete
    assert cmds[:3] == [
        ["pubsub", "subscriptions", "list", "--format=value(name.basename())", f"--project={PROJECT}"],
        ["pubsub", "subscriptions", "describe", "o7-clicks-aggregate", f"--project={PROJECT}"],
        ["functions", "describe", "aggregate-event", "--v2", "--region=europe-west1", f"--project={PROJECT}"],
    ]
    assert sorted(c[2] for c in find(cmds, "functions", "deploy")) == deployed
    # in event mode nothing drains a pull subscription, so none is made to fill up
    assert bool(find(cmds, "pubsub", "subscriptions", "create", "o7-clicks-aggregate")) == pull_subscription
    assert any(on == "subscription o7-clicks-aggregate" for _, _, on in bindings(cmds)) == pull_subscription
    assert find(cmds, "pubsub", "subscriptions", "create", "o7-clicks-dead-letter-review")
    assert not find(cmds, "functions", "delete") and not find(cmds, "pubsub", "subscriptions", "delete")


PULL_SUBSCRIPTION = "pubsub subscriptions describe o7-clicks-aggregate "
EVENT_FUNCTION = "functions describe aggregate-event "
# mode -> what a deploy in that mode leaves, as the fake's FAKE_GCLOUD_EXISTS
DEPLOYED = {"scheduled": PULL_SUBSCRIPTION, "event": EVENT_FUNCTION, "both": f"{PULL_SUBSCRIPTION};{EVENT_FUNCTION}"}


@pytest.mark.parametrize(("before", "mode", "deleted"), [
    ("both", "scheduled", "functions delete aggregate-event --region=europe-west1 "),
    # also what an event-mode deploy made before this rule: a pull subscription nothing drained
    ("both", "event", "pubsub subscriptions delete o7-clicks-aggregate "),
    ("scheduled", "both", None),
    ("event", "both", None),
    ("scheduled", "scheduled", None),
    ("event", "event", None),
    ("both", "both", None),
])
def test_a_mode_switch_deletes_the_unused_path_once_the_one_that_stays_counts(
    fake_gcloud, tmp_path, before, mode, deleted
):
    result = run_deploy(fake_gcloud, env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"),
        "AGGREGATE_MODE": mode, "FAKE_GCLOUD_EXISTS": DEPLOYED[before]})
    assert result.returncode == 0, result.stderr
    calls = (fake_gcloud / "calls").read_text().splitlines()
    deletes = [i for i, c in enumerate(calls) if c.startswith(("functions delete ", "pubsub subscriptions delete "))]
    if deleted is None:
        assert deletes == []
        return
    assert [calls[i] for i in deletes] == [c for c in calls if c.startswith(deleted)] and len(deletes) == 1
    last_deploy = max(i for i, c in enumerate(calls) if c.startswith(("functions deploy ", "scheduler jobs ")))
    assert deletes[0] > last_deploy


@pytest.mark.parametrize(("before", "mode"), [("scheduled", "event"), ("event", "scheduled")])
def test_a_direct_switch_between_scheduled_and_event_is_refused_before_anything_changes(
    fake_gcloud, tmp_path, before, mode
):
    """Each path holds clicks the other never saw: the switch goes through both (docs/deploying.md, Aggregate modes)."""
    result = run_deploy(fake_gcloud, env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"),
        "AGGREGATE_MODE": mode, "FAKE_GCLOUD_EXISTS": DEPLOYED[before]})
    assert result.returncode == 2
    assert f"AGGREGATE_MODE={mode} would delete" in result.stderr
    assert "deploy with AGGREGATE_MODE=both first" in result.stderr
    assert_only_looked_up(fake_gcloud)


def assert_only_looked_up(fake_gcloud: Path) -> None:
    calls = (fake_gcloud / "calls").read_text().splitlines()
    assert calls and all({"describe", "list"} & set(c.split()[:3]) for c in calls), calls


CLICKS_SUBSCRIPTION = "o7-clicks-aggregate"
AGGREGATE_HTTP_URL = "https://aggregate-http-abc123-ew.a.run.app"  # as the fake describes it


def subscriptions_of(partitions: range) -> list[str]:
    return [subscription_of(CLICKS_SUBSCRIPTION, partition) for partition in partitions]


def existing_subscriptions(partitions: int) -> str:
    """FAKE_GCLOUD_EXISTS for the pull subscriptions a deploy with that many partitions made."""
    return ";".join(f"pubsub subscriptions describe {name} " for name in subscriptions_of(range(partitions)))


def click_subscriptions_created(cmds: list[list[str]]) -> list[list[str]]:
    return [c for c in find(cmds, "pubsub", "subscriptions", "create") if c[3] != "o7-clicks-dead-letter-review"]


def real_run(fake_gcloud: Path, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """A deploy against the fake gcloud, which prints each command as a dry run does."""
    return run_deploy(fake_gcloud, env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"),
        **settings})


def test_each_partition_gets_its_filtered_subscription_and_its_scheduled_run(fake_gcloud, tmp_path):
    result = real_run(fake_gcloud, tmp_path, AGGREGATE_MODE="both", AGGREGATE_PARTITIONS="3")
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    names = subscriptions_of(range(3))
    creates = click_subscriptions_created(cmds)
    assert [c[3] for c in creates] == names
    for partition, create in enumerate(creates):
        # the filters the code's partitions are spelled for, and otherwise made as partition 0's
        assert f"--message-filter={subscription_filter(partition)}" in create
        assert [f for f in create[4:] if not f.startswith("--message-filter=")] == \
            [f for f in creates[0][4:] if not f.startswith("--message-filter=")]
    granted = bindings(cmds)
    for name in names:
        assert {(m, role) for m, role, on in granted if on == f"subscription {name}"} == {
            (f"serviceAccount:{AGGREGATE_SA}", "roles/pubsub.subscriber"),
            ("serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com", "roles/pubsub.subscriber"),
        }, name
    # clicks a new track instance tags with a partition always have its subscription to go to
    lines = result.stdout.splitlines()
    assert max(i for i, line in enumerate(lines) if "gcloud pubsub subscriptions create o7-clicks-aggregate" in line) \
        < next(i for i, line in enumerate(lines) if "gcloud functions deploy track " in line)

    jobs = find(cmds, "scheduler", "jobs", "create", "http")
    assert [job[4] for job in jobs] == ["o7tracker-aggregate", "o7tracker-aggregate-p1", "o7tracker-aggregate-p2"]
    uris = [next(f for f in job if f.startswith("--uri=")) for job in jobs]
    assert uris == [f"--uri={AGGREGATE_HTTP_URL}", f"--uri={AGGREGATE_HTTP_URL}?partition=1",
                    f"--uri={AGGREGATE_HTTP_URL}?partition=2"]
    # schedule, deadline, caller and the audience Cloud Run checks: partition 0's
    assert f"--oidc-token-audience={AGGREGATE_HTTP_URL}" in jobs[0]
    for job, uri in zip(jobs, uris, strict=True):
        assert set(job[5:]) - {uri} == set(jobs[0][5:]) - {uris[0]}

    for name in ("track", "aggregate-http", "aggregate-event"):
        assert "AGGREGATE_PARTITIONS=3" in env_vars(the_one(cmds, "functions", "deploy", name)), name


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_partition_0_subscription_from_before_partitions_is_kept_as_it_is(fake_gcloud, tmp_path, partitions):
    """Without a filter, which cannot be added: its drain acks the other partitions' clicks uncounted."""
    result = real_run(fake_gcloud, tmp_path, AGGREGATE_PARTITIONS=str(partitions),
                      FAKE_GCLOUD_EXISTS=existing_subscriptions(1))
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert [c[3] for c in click_subscriptions_created(cmds)] == subscriptions_of(range(1, partitions))
    assert any(on == f"subscription {CLICKS_SUBSCRIPTION}" for _, _, on in bindings(cmds))
    notes = [line for line in result.stderr.splitlines() if line.startswith(f"note: {CLICKS_SUBSCRIPTION} ")]
    if partitions == 1:
        assert notes == []
        return
    [note] = notes
    assert "no filter" in note and "docs/counting.md" in note


@pytest.mark.parametrize(("partitions", "accepted"), [(1, False), (2, False), (3, True), (5, True)])
def test_partitions_can_only_be_raised(fake_gcloud, tmp_path, partitions, accepted):
    """Running track instances publish to every partition they were deployed with."""
    result = real_run(fake_gcloud, tmp_path, AGGREGATE_PARTITIONS=str(partitions),
                      FAKE_GCLOUD_EXISTS=existing_subscriptions(3))
    if not accepted:
        assert result.returncode == 2
        [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert f"AGGREGATE_PARTITIONS={partitions}" in error and "o7-clicks-aggregate-p2 exists" in error
        assert "can only be raised" in error and "docs/counting.md, Partitions" in error
        assert_only_looked_up(fake_gcloud)
        return
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert [c[3] for c in click_subscriptions_created(cmds)] == subscriptions_of(range(3, partitions))
    assert len(find(cmds, "scheduler", "jobs", "create", "http")) == partitions  # the fake has no job yet
    assert not [c for c in cmds if "delete" in c[:3]]


@pytest.mark.parametrize(("settings", "complaint"), [
    ({"AGGREGATE_PARTITIONS": "0"}, "must be a whole number from 1 to 32, not '0'"),
    ({"AGGREGATE_PARTITIONS": str(config.MAX_PARTITIONS + 1)}, f"not '{config.MAX_PARTITIONS + 1}'"),
    ({"AGGREGATE_PARTITIONS": "two"}, "not 'two'"),
    ({"AGGREGATE_PARTITIONS": "-1"}, "not '-1'"),
    ({"AGGREGATE_PARTITIONS": "1.5"}, "not '1.5'"),
    ({"AGGREGATE_PARTITIONS": "02"}, "not '02'"),
    # partitions split the drain, and event mode has none
    ({"AGGREGATE_PARTITIONS": "2", "AGGREGATE_MODE": "event"}, "AGGREGATE_MODE=event"),
])
def test_a_bad_number_of_partitions_is_refused_before_anything_is_done(fake_gcloud, tmp_path, settings, complaint):
    result = real_run(fake_gcloud, tmp_path, **settings)
    assert result.returncode == 2
    [error] = result.stderr.splitlines()
    assert error.startswith("error: AGGREGATE_PARTITIONS") and complaint in error
    assert not (fake_gcloud / "calls").exists()


def test_as_many_partitions_as_the_code_has(fake_gcloud, tmp_path):
    result = run_deploy(fake_gcloud, "--dry-run", env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"),
        "AGGREGATE_PARTITIONS": str(config.MAX_PARTITIONS)})
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    assert len(click_subscriptions_created(cmds)) == config.MAX_PARTITIONS
    assert len(find(cmds, "scheduler", "jobs", "create", "http")) == config.MAX_PARTITIONS


def test_switching_to_event_deletes_every_partitions_subscription_and_extra_job(fake_gcloud, tmp_path):
    """From both with 3 partitions: partition 0's job stays, as the scheduled run refreshes totals in every mode."""
    jobs = ";".join(f"scheduler jobs describe {job} " for job in
                    ("o7tracker-aggregate", "o7tracker-aggregate-p1", "o7tracker-aggregate-p2"))
    result = real_run(fake_gcloud, tmp_path, AGGREGATE_MODE="event",
                      FAKE_GCLOUD_EXISTS=f"{existing_subscriptions(3)};{EVENT_FUNCTION};{jobs}")
    assert result.returncode == 0, result.stderr
    calls = (fake_gcloud / "calls").read_text().splitlines()
    deletes = [i for i, c in enumerate(calls) if c.split()[2] == "delete"]
    # the jobs first: the next deploy finds partitions by their subscriptions, so no job outlives its own
    assert [calls[i].split()[:4] for i in deletes] == [
        ["scheduler", "jobs", "delete", "o7tracker-aggregate-p1"],
        ["scheduler", "jobs", "delete", "o7tracker-aggregate-p2"],
        *[["pubsub", "subscriptions", "delete", name] for name in subscriptions_of(range(3))],
    ]
    last_deploy = max(i for i, c in enumerate(calls)
                      if c.startswith(("functions deploy ", "scheduler jobs create ", "scheduler jobs update ")))
    assert deletes[0] > last_deploy


def test_the_direct_switch_to_event_is_refused_for_every_partitions_subscription(fake_gcloud, tmp_path):
    result = real_run(fake_gcloud, tmp_path, AGGREGATE_MODE="event", FAKE_GCLOUD_EXISTS=existing_subscriptions(3))
    assert result.returncode == 2
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert all(name in error.split() for name in subscriptions_of(range(3)))
    assert "deploy with AGGREGATE_MODE=both first" in error
    assert_only_looked_up(fake_gcloud)


@pytest.mark.parametrize(("settings", "accepted"), [
    ({}, True),  # 50 + 20 <= 120
    ({"AGGREGATE_TIMEOUT": "70s"}, True),
    ({"AGGREGATE_TIMEOUT": "69"}, False),
    ({"AGGREGATE_TIMEOUT": "1m"}, False),
    ({"AGGREGATE_TIMEOUT": "2m", "AGGREGATE_MAX_SECONDS": "100"}, True),
    ({"AGGREGATE_TIMEOUT": "2m", "AGGREGATE_MAX_SECONDS": "100.5"}, False),
    ({"AGGREGATE_TIMEOUT": "1m30s", "AGGREGATE_MAX_SECONDS": "70"}, True),
    ({"AGGREGATE_TIMEOUT": "1h", "AGGREGATE_MAX_SECONDS": "3581"}, False),
])
def test_the_run_budget_must_leave_a_margin_under_the_timeout(fake_gcloud, tmp_path, settings, accepted):
    result = run_deploy(fake_gcloud, "--dry-run", env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"), **settings})
    assert not (fake_gcloud / "calls").exists()
    if not accepted:
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert "AGGREGATE_TIMEOUT" in line and "AGGREGATE_MAX_SECONDS" in line
        assert "+ " not in result.stdout
        return
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    timeout = settings.get("AGGREGATE_TIMEOUT", "120s")
    flags = the_one(cmds, "functions", "deploy", "aggregate-http")
    # the budget checked is the one deployed, on the vCPU and memory the drain is sized for
    assert f"--timeout={timeout}" in flags and "--cpu=1" in flags and "--memory=1Gi" in flags
    assert f"AGGREGATE_MAX_SECONDS={settings.get('AGGREGATE_MAX_SECONDS', '50')}" in env_vars(flags)
    assert f"--attempt-deadline={timeout}" in the_one(cmds, "scheduler", "jobs", "create", "http")


@pytest.mark.parametrize(("name", "value"), [
    ("AGGREGATE_TIMEOUT", "two minutes"), ("AGGREGATE_TIMEOUT", "1.5m"), ("AGGREGATE_TIMEOUT", "-120s"),
    ("AGGREGATE_MAX_SECONDS", "0"), ("AGGREGATE_MAX_SECONDS", "fifty"), ("AGGREGATE_MAX_SECONDS", "-5"),
])
def test_a_malformed_budget_or_timeout_is_refused(fake_gcloud, name, value):
    result = run_deploy(fake_gcloud, "--dry-run", env={name: value})
    assert result.returncode == 2
    assert f"{name} must be" in result.stderr and repr(value) in result.stderr.replace('"', "'")
    assert not (fake_gcloud / "calls").exists()


def test_track_deploys_for_its_async_stack_with_the_click_path_settings(fake_gcloud, tmp_path):
    """One uvicorn worker per instance (one cache, one publisher); gunicorn's THREADS does not apply."""
    settings = {"LOOKUP_TIMEOUT_SECONDS": "2", "PUBLISH_WAIT_SECONDS": "0.5", "PUBLISH_DEADLINE_SECONDS": "20",
                "PUBLISH_BATCH_MAX_MESSAGES": "500", "PUBLISH_BUFFER_MAX_MESSAGES": "5000",
                "PUBLISH_BUFFER_MAX_BYTES": "4000000", "CACHE_TTL_SECONDS": "60"}
    result = run_deploy(fake_gcloud, "--dry-run", env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path / "stage"), **settings})
    assert result.returncode == 0, result.stderr
    flags = the_one(commands(result.stdout), "functions", "deploy", "track")
    assert "--concurrency=250" in flags
    track_env = env_vars(flags)
    assert {f"{name}={value}" for name, value in settings.items()} | {"WORKERS=1"} <= track_env
    assert not any(pair.startswith(("THREADS=", "PUBLISH_TIMEOUT_SECONDS=")) for pair in track_env)
    # uvicorn's fast event loop and HTTP parser, which it picks up when installed
    requirements = (tmp_path / "stage" / "track" / "requirements.txt").read_text().split()
    assert {"uvloop", "httptools"} <= {line.partition("==")[0] for line in requirements}


def test_every_list_filter_has_its_composite_index(dry_run):
    result, _ = dry_run
    creates = find(commands(result.stdout), "firestore", "indexes", "composite", "create")
    fields = {tuple(word.removeprefix("--field-config=field-path=") for word in create
                    if word.startswith("--field-config=")) for create in creates}
    newest_first = "created_at,order=descending"
    # status alone, each platform alone and each with status, as CampaignStore.list_page filters
    assert fields == {("status,order=ascending", newest_first),
                      *[(f"targets.{p},order=ascending", newest_first) for p in PLATFORMS],
                      *[("status,order=ascending", f"targets.{p},order=ascending", newest_first) for p in PLATFORMS]}
    assert all("--collection-group=campaigns" in create for create in creates)


# Settings the platform gives every function; deploy.sh never sets them.
SET_BY_CLOUD_RUN = {config.K_SERVICE}


def test_deploy_defaults_are_the_declared_ones(fake_gcloud):
    """deploy.sh needs only bash and gcloud, so it spells out the defaults of what it
    always passes; they must be shared/config.py's, in the code and in --help."""
    assigned = dict(re.findall(r'^([A-Z_]+)="\$\{\1:-([^}]*)\}"$', DEPLOY.read_text(), re.MULTILINE))
    # A default made from another setting's (NAME-review) is checked as it expands.
    assigned = {name: re.sub(r"\$([A-Z_]+)", lambda m: assigned[m[1]], value) for name, value in assigned.items()}
    help_text = run_deploy(fake_gcloud, "--help").stdout
    # An entry is "  NAME  text" and its more deeply indented continuation lines.
    entries = re.findall(r"^  ([A-Z_]+) +(.*(?:\n {4,}.*)*)", help_text, re.MULTILINE)
    documented = {name: m.group(1) for name, text in entries if (m := re.search(r"\(default: ([^)]*)\)", text))}
    checked = 0
    for item in config.SETTINGS:
        for source, defaults in (("deploy.sh", assigned), ("deploy.sh --help", documented)):
            if item.name in defaults:
                expected = config.format_default(item).strip("`")  # 50 for 50.0
                assert defaults[item.name] == expected, f"{source}: {item.name}"
                checked += 1
        assert item.name in help_text or item.name in SET_BY_CLOUD_RUN, f"deploy.sh --help does not mention {item.name}"
    assert checked >= 8


def test_each_function_gets_every_setting_it_reads(fake_gcloud, tmp_path):
    """With every setting set, each function's environment holds exactly what config says it reads."""
    values = {item.name: str(item.default or "set") for item in config.SETTINGS if item.name != config.AUTH_PASSWORD}
    result = run_deploy(fake_gcloud, "--dry-run", env={
        **values, "GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "AGGREGATE_MODE": "both",
        "DEPLOY_STAGE_DIR": str(tmp_path / "stage")})
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    for name, (_, folder, _) in FUNCTIONS.items():
        flags = the_one(cmds, "functions", "deploy", name)
        passed = {pair.split("=", 1)[0] for pair in env_vars(flags)} - {"WORKERS", "THREADS"}
        secrets = {pair.split("=", 1)[0] for f in flags if f.startswith("--set-secrets=")
                   for pair in f.removeprefix("--set-secrets=").split(",")}
        wanted = {item.name for item in config.SETTINGS if folder in item.used_by} - SET_BY_CLOUD_RUN
        if name == "aggregate-event":  # it is pushed its events, and the scheduled run is aggregate-http
            wanted -= {config.CLICKS_SUBSCRIPTION, config.DEAD_LETTER_SUBSCRIPTION}
        assert passed | secrets == wanted, name


def bindings(cmds: list[list[str]]) -> set[tuple[str, str, str]]:
    """Every IAM grant the commands make, as (member, role, resource)."""
    found = set()
    for c in cmds:
        flags = dict(word.split("=", 1) for word in c if word.startswith("--") and "=" in word)
        if c[:2] == ["projects", "add-iam-policy-binding"]:
            found.add((flags["--member"], flags["--role"], "project"))
        elif c[:1] in (["pubsub"], ["secrets"]) and "add-iam-policy-binding" in c:
            kind = {"topics": "topic", "subscriptions": "subscription"}.get(c[1], "secret")
            name = c[c.index("add-iam-policy-binding") + 1]
            found.add((flags["--member"], flags["--role"], f"{kind} {name}"))
        elif c[:2] == ["functions", "add-invoker-policy-binding"]:
            found.add((flags["--member"], "roles/run.invoker", f"function {c[2]}"))
    return found


def test_each_function_runs_as_its_own_account_with_only_what_it_uses(dry_run):
    result, _ = dry_run
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    granted = bindings(cmds)
    expected = {
        TRACK_SA: {("roles/datastore.viewer", "project"), ("roles/pubsub.publisher", "topic o7-clicks"),
                   ("roles/secretmanager.secretAccessor", "secret o7tracker-campaign-id-key")},
        ADMIN_SA: {("roles/datastore.user", "project"),
                   ("roles/secretmanager.secretAccessor", "secret o7tracker-admin-password"),
                   ("roles/secretmanager.secretAccessor", "secret o7tracker-campaign-id-key")},
        AGGREGATE_SA: {("roles/datastore.user", "project"),
                       ("roles/pubsub.subscriber", "subscription o7-clicks-aggregate"),
                       # to count the dead letters, pulling them and handing them back
                       ("roles/pubsub.subscriber", "subscription o7-clicks-dead-letter-review"),
                       ("roles/run.invoker", "function aggregate-event")},  # as the topic trigger's identity
        SCHEDULER_SA: {("roles/run.invoker", "function aggregate-http")},
        PUBSUB_AGENT: {("roles/pubsub.publisher", "topic o7-clicks-dead-letter"),
                       ("roles/pubsub.subscriber", "subscription o7-clicks-aggregate")},
    }
    members = {member for member, _, _ in granted}
    assert members == {f"serviceAccount:{account}" for account in expected}, "a grant to an unexpected member"
    for account, grants in expected.items():
        assert {(role, on) for member, role, on in granted if member == f"serviceAccount:{account}"} == grants, account
    assert not find(cmds, "projects", "add-iam-policy-binding", PROJECT, "--role=roles/owner")

    # only admin may read the admin password
    assert {m for m, role, on in granted if on == "secret o7tracker-admin-password"} == {f"serviceAccount:{ADMIN_SA}"}
    # the campaign id key: admin issues ids with it, track checks them
    assert {m for m, role, on in granted if on == "secret o7tracker-campaign-id-key"} == {
        f"serviceAccount:{ADMIN_SA}", f"serviceAccount:{TRACK_SA}"}
    for account in (TRACK_SA, ADMIN_SA, AGGREGATE_SA, SCHEDULER_SA):
        assert find(cmds, "iam", "service-accounts", "create", account.split("@")[0])
    runs_as = {"track": TRACK_SA, "admin": ADMIN_SA, "aggregate-event": AGGREGATE_SA, "aggregate-http": AGGREGATE_SA}
    for name, account in runs_as.items():
        assert f"--service-account={account}" in the_one(cmds, "functions", "deploy", name), name
    assert f"--trigger-service-account={AGGREGATE_SA}" in the_one(cmds, "functions", "deploy", "aggregate-event")
    # the old shared account is only looked for, to be retired
    assert [c for c in cmds if SHARED_SA in " ".join(c)] == [
        ["iam", "service-accounts", "describe", SHARED_SA, f"--project={PROJECT}"]]


def test_every_function_has_an_instance_cap_that_can_be_set(fake_gcloud, tmp_path):
    defaults = {"track": "100", "admin": "2", "aggregate-event": "10", "aggregate-http": "1"}
    settings = {"TRACK_MAX_INSTANCES": "7", "ADMIN_MAX_INSTANCES": "1", "AGGREGATE_EVENT_MAX_INSTANCES": "3",
                "AGGREGATE_HTTP_MAX_INSTANCES": "2"}
    for env, caps in (({}, defaults), (settings, dict(zip(defaults, settings.values(), strict=True)))):
        result = run_deploy(fake_gcloud, "--dry-run", env={
            **env, "GOOGLE_CLOUD_PROJECT": PROJECT, "AGGREGATE_MODE": "both", "DEPLOY_STAGE_DIR": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        cmds = commands(result.stdout)
        for name, cap in caps.items():
            assert f"--max-instances={cap}" in the_one(cmds, "functions", "deploy", name), name
    for bad in ("0", "-1", "ten", ""):
        result = run_deploy(fake_gcloud, "--dry-run", env={"ADMIN_MAX_INSTANCES": bad or " "})
        assert result.returncode == 2 and "ADMIN_MAX_INSTANCES" in result.stderr
    assert not (fake_gcloud / "calls").exists()


def test_each_partitions_run_has_an_aggregate_instance_of_its_own(fake_gcloud, tmp_path):
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "AGGREGATE_PARTITIONS": "4", "DEPLOY_STAGE_DIR": str(tmp_path)}
    result = run_deploy(fake_gcloud, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "--max-instances=4" in the_one(commands(result.stdout), "functions", "deploy", "aggregate-http")
    result = run_deploy(fake_gcloud, "--dry-run", env={**env, "AGGREGATE_HTTP_MAX_INSTANCES": "3"})
    assert result.returncode == 2 and "AGGREGATE_HTTP_MAX_INSTANCES=3" in result.stderr
    assert not (fake_gcloud / "calls").exists()


@pytest.mark.parametrize("password", ["short", "fifteen-chars-x"])
def test_a_short_password_is_refused_before_anything_is_done(fake_gcloud, password):
    result = run_deploy(fake_gcloud, env={"GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": password})
    assert result.returncode == 2
    assert "at least 16" in result.stderr and password not in result.stderr + result.stdout
    assert not (fake_gcloud / "calls").exists()


def test_without_a_password_one_is_generated_stored_and_how_to_read_it_is_printed(fake_gcloud, tmp_path):
    result = run_deploy(fake_gcloud, env={"GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    stored = (fake_gcloud / "stdin-o7tracker-admin-password").read_text()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", stored)
    assert stored not in result.stdout + result.stderr
    assert (f"gcloud secrets versions access latest --secret=o7tracker-admin-password --project={PROJECT}"
            in result.stderr)
    calls = (fake_gcloud / "calls").read_text()
    assert "secrets create o7tracker-admin-password" in calls and stored not in calls


def test_an_existing_secret_is_kept_when_no_password_is_given(fake_gcloud, tmp_path):
    result = run_deploy(fake_gcloud, env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path),
        "FAKE_GCLOUD_EXISTS": "secrets describe o7tracker-admin-password"})
    assert result.returncode == 0, result.stderr
    assert not (fake_gcloud / "stdin-o7tracker-admin-password").exists()
    assert "generated" not in result.stderr


def test_admin_behind_iam(fake_gcloud, tmp_path):
    invokers = "user:ops@example.com,group:admins@example.com"
    result = run_deploy(fake_gcloud, "--dry-run", env={
        "GOOGLE_CLOUD_PROJECT": PROJECT, "DEPLOY_STAGE_DIR": str(tmp_path), "ADMIN_ACCESS": "iam",
        "ADMIN_INVOKERS": invokers})
    assert result.returncode == 0, result.stderr
    cmds = commands(result.stdout)
    flags = the_one(cmds, "functions", "deploy", "admin")
    assert "--no-allow-unauthenticated" in flags and "--allow-unauthenticated" not in flags
    assert ("--set-secrets=AUTH_PASSWORD=o7tracker-admin-password:latest,CAMPAIGN_ID_KEY=o7tracker-campaign-id-key:1"
            in flags)  # basic auth still applies
    assert {m for m, role, on in bindings(cmds) if on == "function admin"} == set(invokers.split(","))
    assert "--member=allUsers" in the_one(cmds, "functions", "remove-invoker-policy-binding", "admin")

    bad = run_deploy(fake_gcloud, "--dry-run", env={"ADMIN_ACCESS": "open"})
    assert bad.returncode == 2 and "ADMIN_ACCESS" in bad.stderr


def test_the_old_shared_account_is_deleted_once_no_function_uses_it(fake_gcloud, tmp_path):
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "AUTH_PASSWORD": SECRET, "DEPLOY_STAGE_DIR": str(tmp_path),
           "FAKE_GCLOUD_EXISTS": f"service-accounts describe {SHARED_SA}"}
    result = run_deploy(fake_gcloud, env=env)
    assert result.returncode == 0, result.stderr
    calls = (fake_gcloud / "calls").read_text().splitlines()
    deletes = [i for i, c in enumerate(calls) if c.startswith(f"iam service-accounts delete {SHARED_SA}")]
    assert len(deletes) == 1
    assert deletes[0] > max(i for i, c in enumerate(calls) if c.startswith("functions deploy "))

    (fake_gcloud / "calls").unlink()
    result = run_deploy(fake_gcloud, env={**env, "FAKE_GCLOUD_FUNCTIONS": "aggregate-event\n"})
    assert result.returncode == 0, result.stderr
    assert "service-accounts delete" not in (fake_gcloud / "calls").read_text()
    assert f"{SHARED_SA} kept: still used by aggregate-event" in result.stderr
