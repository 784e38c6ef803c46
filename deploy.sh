#!/usr/bin/env bash
# Deploys o7tracker to a Google Cloud project with gcloud: the four gen2
# functions and everything they rely on (Pub/Sub, Secret Manager, Firestore
# TTL, Cloud Scheduler, a service account per function with only what that
# function uses), and a pull subscription and a scheduler job per partition of
# the click stream. Safe to run again: each resource is created only when
# missing, and the functions are redeployed.
# Needs only bash and gcloud; see usage() for the settings.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [--project=ID] [--region=REGION] [--dry-run]
       ./deploy.sh --help

Deploys the track, admin, aggregate-event and aggregate-http functions (gen2,
python312) and creates what they need when it is missing.

  --project=ID     Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)
  --region=REGION  region of the functions and the scheduler job
                   (default: $REGION, else europe-west1)
  --dry-run        print the gcloud commands a deploy to an empty project
                   would run, without running gcloud; the sources are still
                   staged (in $DEPLOY_STAGE_DIR when set)
  -h, --help       show this help

Environment:
  AUTH_PASSWORD        admin password, at least 16 characters, stored in Secret
                       Manager as o7tracker-admin-password; when set, it becomes
                       the secret's new version. When unset and the secret does
                       not exist yet, a random one is generated and stored, and
                       the command that reads it back is printed. Never printed.
  AUTH_USER            admin user name (default: admin)
  CAMPAIGN_ID_KEY      not read from here: the key campaign ids are checked
                       with is made once, at random, in Secret Manager as
                       o7tracker-campaign-id-key, and never changed
  ADMIN_ACCESS         public (default): the admin function is open to the
                       internet behind its basic auth; iam: only the members in
                       ADMIN_INVOKERS may call it, with an identity token, and
                       basic auth still applies (see the README)
  ADMIN_INVOKERS       comma-separated IAM members allowed to call the admin
                       function when ADMIN_ACCESS=iam, e.g. user:me@example.com
  TRACK_MAX_INSTANCES  most instances of track (default: 100)
  ADMIN_MAX_INSTANCES  most instances of admin (default: 2)
  AGGREGATE_EVENT_MAX_INSTANCES
                       most instances of aggregate-event (default: 10)
  AGGREGATE_HTTP_MAX_INSTANCES
                       most instances of aggregate-http (default and least:
                       AGGREGATE_PARTITIONS, each instance one partition's run)
  FALLBACK_URL         redirect for unknown links (default: http://outfit7.com)
  CLICKS_TOPIC         click events topic (default: o7-clicks)
  CLICKS_SUBSCRIPTION  pull subscription drained by aggregate-http, in the scheduled
                       and both modes (default: o7-clicks-aggregate), partition 0's
  DEAD_LETTER_TOPIC    where events the drain failed to fold 10 times go
                       (default: o7-clicks-dead-letter)
  DEAD_LETTER_SUBSCRIPTION
                       the dead-letter topic's subscription, where those events
                       wait to be counted and requeued with python -m
                       tools.dead_letters; unset, DEAD_LETTER_TOPIC-review
                       (default: o7-clicks-dead-letter-review)
  FIRESTORE_LOCATION   location of a newly created Firestore database
                       (default: the region)
  AGGREGATE_MODE       scheduled (default): the drain alone, one write per campaign
                       per shard per batch, whatever the click rate; event: the
                       Pub/Sub-triggered function alone, counts within a second
                       but one commit per click, and no pull subscription; both:
                       each event is folded by both (counted once, at twice the
                       cost). What the mode does not use (aggregate-event, the
                       pull subscriptions) is deleted, once what replaces it is
                       deployed; switching between scheduled and event goes
                       through both (docs/deploying.md, Aggregate modes). In
                       every mode the scheduled run refreshes the totals the
                       admin shows and sweeps deleted campaigns' counters
  AGGREGATE_PARTITIONS partitions of the click stream, 1 to 32 (default: 1): track
                       tags each click with one, and each has its own filtered pull
                       subscription and scheduler job (partition 0's are
                       CLICKS_SUBSCRIPTION and o7tracker-aggregate, partition n's
                       the same names plus -pn). It can only be raised: fewer than
                       are deployed are refused, and so is more than 1 with
                       AGGREGATE_MODE=event (docs/deploying.md, Partitions)
  AGGREGATE_SCHEDULE   cron schedule of the drain (default: every minute)
  AGGREGATE_MAX_SECONDS
                       time budget of a scheduled run (default: 50)
  AGGREGATE_TIMEOUT    timeout of aggregate-http and its scheduler attempt, as
                       120s, 2m or 120 (default: 120s); refused unless it is at
                       least AGGREGATE_MAX_SECONDS + 20 s
  TRACK_CONCURRENCY    requests per track instance (default: 250)
  DEPLOY_STAGE_DIR     where function sources are staged (default: a temporary
                       directory, removed on exit)
  CACHE_TTL_SECONDS, CACHE_MAX_SIZE, NEGATIVE_CACHE_TTL_SECONDS,
  LOOKUP_TIMEOUT_SECONDS, PUBLISH_WAIT_SECONDS, PUBLISH_DEADLINE_SECONDS,
  PUBLISH_BATCH_MAX_MESSAGES, PUBLISH_MAX_IN_FLIGHT, PUBLISH_BUFFER_MAX_MESSAGES,
  PUBLISH_BUFFER_MAX_BYTES, AGGREGATE_BATCH_SIZE, COUNTER_SHARDS,
  AGGREGATE_FILL_SECONDS, REDELIVERY_HORIZON_DAYS, MAX_BODY_BYTES,
  DELETE_GRACE_SECONDS, DELETE_MAX_DOCUMENTS,
  LOGIN_MAX_FAILURES, LOGIN_WINDOW_SECONDS
                       passed on to the functions that read them, when set
  K_SERVICE            never passed: Cloud Run sets it on every function
  TRACK_BASE_URL       where the admin's tracking links point; unset, the
                       deployed track function's URL
EOF
}

# ---------------------------------------------------------------- settings --

DRY_RUN=0
PROJECT="${GOOGLE_CLOUD_PROJECT:-}"
REGION="${REGION:-europe-west1}"

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --project=*) PROJECT="${1#*=}" ;;
    --project) [ $# -ge 2 ] || { echo "error: --project needs a value" >&2; exit 2; }; PROJECT="$2"; shift ;;
    --region=*) REGION="${1#*=}" ;;
    --region) [ $# -ge 2 ] || { echo "error: --region needs a value" >&2; exit 2; }; REGION="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

RUNTIME=python312
CLICKS_TOPIC="${CLICKS_TOPIC:-o7-clicks}"
CLICKS_SUBSCRIPTION="${CLICKS_SUBSCRIPTION:-o7-clicks-aggregate}"
DEAD_LETTER_TOPIC="${DEAD_LETTER_TOPIC:-o7-clicks-dead-letter}"
DEAD_LETTER_SUBSCRIPTION="${DEAD_LETTER_SUBSCRIPTION:-$DEAD_LETTER_TOPIC-review}"
ADMIN_SECRET=o7tracker-admin-password
ID_KEY_SECRET=o7tracker-campaign-id-key
MIN_PASSWORD_LENGTH=16
AUTH_USER="${AUTH_USER:-admin}"
FALLBACK_URL="${FALLBACK_URL:-http://outfit7.com}"
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-$REGION}"
AGGREGATE_MODE="${AGGREGATE_MODE:-scheduled}"
case "$AGGREGATE_MODE" in
  scheduled|event|both) ;;
  *) echo "error: AGGREGATE_MODE must be scheduled, event or both, not '$AGGREGATE_MODE'" >&2; exit 2 ;;
esac
# shared/config.py's MAX_PARTITIONS (tests/test_deploy.py checks).
MAX_PARTITIONS=32
AGGREGATE_PARTITIONS="${AGGREGATE_PARTITIONS:-1}"
if ! [[ $AGGREGATE_PARTITIONS =~ ^[1-9][0-9]?$ ]] || [ "$AGGREGATE_PARTITIONS" -gt "$MAX_PARTITIONS" ]; then
  echo "error: AGGREGATE_PARTITIONS must be a whole number from 1 to $MAX_PARTITIONS, not '$AGGREGATE_PARTITIONS'" >&2
  exit 2
fi
if [ "$AGGREGATE_MODE" = event ] && [ "$AGGREGATE_PARTITIONS" != 1 ]; then
  echo "error: AGGREGATE_PARTITIONS=$AGGREGATE_PARTITIONS needs a drain to split, and AGGREGATE_MODE=event has" \
    "none: deploy event with 1, or scheduled or both with $AGGREGATE_PARTITIONS" >&2
  exit 2
fi
AGGREGATE_SCHEDULE="${AGGREGATE_SCHEDULE:-* * * * *}"
AGGREGATE_TIMEOUT="${AGGREGATE_TIMEOUT:-120s}"
AGGREGATE_MAX_SECONDS="${AGGREGATE_MAX_SECONDS:-50}"
# After its budget a scheduled run still answers, and a cold start may come
# before it; cut off at the timeout, it would leave what it drained unacked
# and its summary unsaid.
AGGREGATE_TIMEOUT_MARGIN_SECONDS=20

# seconds_up NUMBER: seconds (50, 42.5) rounded up to whole ones; fails when
# NUMBER is not a plain decimal.
seconds_up() {
  [[ $1 =~ ^([0-9]+)(\.([0-9]+))?$ ]] || return 1
  local whole=$((10#${BASH_REMATCH[1]}))
  if [[ ${BASH_REMATCH[3]} =~ [1-9] ]]; then whole=$((whole + 1)); fi
  echo "$whole"
}

# duration_seconds DURATION: a gcloud duration (120s, 2m, 1m30s, 1h) or plain
# seconds, in whole seconds; fails when it is neither.
duration_seconds() {
  local rest="$1" total=0 amount
  if [[ $rest =~ ^[0-9]+$ ]]; then echo "$((10#$rest))"; return 0; fi
  [[ $rest =~ ^([0-9]+[hms])+$ ]] || return 1
  while [[ $rest =~ ^([0-9]+)([hms])(.*)$ ]]; do
    amount=$((10#${BASH_REMATCH[1]}))
    case "${BASH_REMATCH[2]}" in
      h) total=$((total + amount * 3600)) ;;
      m) total=$((total + amount * 60)) ;;
      s) total=$((total + amount)) ;;
    esac
    rest="${BASH_REMATCH[3]}"
  done
  echo "$total"
}

if ! budget_seconds="$(seconds_up "$AGGREGATE_MAX_SECONDS")" || [ "$budget_seconds" = 0 ]; then
  echo "error: AGGREGATE_MAX_SECONDS must be a positive number of seconds, not '$AGGREGATE_MAX_SECONDS'" >&2
  exit 2
fi
if ! timeout_seconds="$(duration_seconds "$AGGREGATE_TIMEOUT")"; then
  echo "error: AGGREGATE_TIMEOUT must be a duration like 120s, 2m or 120, not '$AGGREGATE_TIMEOUT'" >&2
  exit 2
fi
if [ $((budget_seconds + AGGREGATE_TIMEOUT_MARGIN_SECONDS)) -gt "$timeout_seconds" ]; then
  echo "error: AGGREGATE_TIMEOUT=$AGGREGATE_TIMEOUT must leave $AGGREGATE_TIMEOUT_MARGIN_SECONDS s past" \
    "AGGREGATE_MAX_SECONDS=$AGGREGATE_MAX_SECONDS for a cold start and the run's answer: raise it to at least" \
    "$((budget_seconds + AGGREGATE_TIMEOUT_MARGIN_SECONDS))s or lower AGGREGATE_MAX_SECONDS" >&2
  exit 2
fi
TRACK_CONCURRENCY="${TRACK_CONCURRENCY:-250}"
TRACK_MAX_INSTANCES="${TRACK_MAX_INSTANCES:-100}"
ADMIN_MAX_INSTANCES="${ADMIN_MAX_INSTANCES:-2}"
AGGREGATE_EVENT_MAX_INSTANCES="${AGGREGATE_EVENT_MAX_INSTANCES:-10}"
# An instance takes one request at a time: every partition's run must find one.
AGGREGATE_HTTP_MAX_INSTANCES="${AGGREGATE_HTTP_MAX_INSTANCES:-$AGGREGATE_PARTITIONS}"
for name in TRACK_MAX_INSTANCES ADMIN_MAX_INSTANCES AGGREGATE_EVENT_MAX_INSTANCES AGGREGATE_HTTP_MAX_INSTANCES; do
  if ! [[ ${!name} =~ ^[1-9][0-9]*$ ]]; then
    echo "error: $name must be a positive whole number, not '${!name}'" >&2
    exit 2
  fi
done
if [ "$AGGREGATE_HTTP_MAX_INSTANCES" -lt "$AGGREGATE_PARTITIONS" ]; then
  echo "error: AGGREGATE_HTTP_MAX_INSTANCES=$AGGREGATE_HTTP_MAX_INSTANCES leaves partitions without an instance" \
    "for their runs: set it to AGGREGATE_PARTITIONS ($AGGREGATE_PARTITIONS) or more" >&2
  exit 2
fi
ADMIN_ACCESS="${ADMIN_ACCESS:-public}"
ADMIN_INVOKERS="${ADMIN_INVOKERS:-}"
case "$ADMIN_ACCESS" in
  public) ;;
  iam) [ -n "$ADMIN_INVOKERS" ] || echo "warning: ADMIN_ACCESS=iam with no ADMIN_INVOKERS: only project owners and editors can call admin" >&2 ;;
  *) echo "error: ADMIN_ACCESS must be public or iam, not '$ADMIN_ACCESS'" >&2; exit 2 ;;
esac
SCHEDULER_JOB=o7tracker-aggregate

# The password is read once and kept out of the environment of every command.
ADMIN_PASSWORD="${AUTH_PASSWORD:-}"
unset AUTH_PASSWORD
if [ -n "$ADMIN_PASSWORD" ] && [ "${#ADMIN_PASSWORD}" -lt "$MIN_PASSWORD_LENGTH" ]; then
  echo "error: AUTH_PASSWORD is ${#ADMIN_PASSWORD} characters; the admin API is on the internet, so it must be" >&2
  echo "       at least $MIN_PASSWORD_LENGTH (or leave it unset to have one generated when the secret is made)" >&2
  exit 2
fi

if [ -z "$PROJECT" ]; then
  if [ "$DRY_RUN" = 0 ]; then
    echo "error: no Google Cloud project: set GOOGLE_CLOUD_PROJECT or pass --project=ID" >&2
    echo "       (or use --dry-run to only print the commands)" >&2
    exit 1
  fi
  PROJECT='<project>'
fi

# One service account per function, each allowed only what its code uses
# (the README's "Service accounts" table; tests/test_deploy.py checks every binding):
#   track      reads campaigns; publishes to the click topic
#   admin      reads and writes campaigns; reads the admin password secret
#   aggregate  reads and writes campaigns and counters; pulls the subscription;
#              is the identity the click topic's trigger calls aggregate-event as
#   scheduler  calls aggregate-http
TRACK_SA="o7tracker-track@$PROJECT.iam.gserviceaccount.com"
ADMIN_SA="o7tracker-admin@$PROJECT.iam.gserviceaccount.com"
AGGREGATE_SA="o7tracker-aggregate@$PROJECT.iam.gserviceaccount.com"
SCHEDULER_SA="o7tracker-scheduler@$PROJECT.iam.gserviceaccount.com"
# Earlier deploys ran every function as this one account, which could do
# everything; it is deleted once the functions have moved off it.
SHARED_SA="o7tracker-functions@$PROJECT.iam.gserviceaccount.com"

if [ "$DRY_RUN" = 0 ]; then
  command -v gcloud >/dev/null || { echo "error: gcloud not found; install the Google Cloud CLI" >&2; exit 1; }
  export CLOUDSDK_CORE_DISABLE_PROMPTS=1
fi

if [ -n "${DEPLOY_STAGE_DIR:-}" ]; then
  STAGE_DIR="$DEPLOY_STAGE_DIR"
  mkdir -p "$STAGE_DIR"
else
  STAGE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/o7tracker-deploy.XXXXXX")"
  trap 'rm -rf "$STAGE_DIR"' EXIT
fi

# ----------------------------------------------------------------- helpers --

step() { echo "==> $*" >&2; }

# The arguments as one shell line, quoting only where needed:
# --flag='a value', 'a word'.
quote() {
  local arg flag words=()
  for arg in "$@"; do
    flag=""
    if [[ $arg =~ ^(--[-a-z0-9]+=)(.*)$ ]]; then
      flag="${BASH_REMATCH[1]}"
      arg="${BASH_REMATCH[2]}"
    fi
    if [[ $arg =~ ^[-A-Za-z0-9_./:=@,+%]+$ ]]; then
      words+=("$flag$arg")
    else
      words+=("$flag'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${words[*]}"
}

# run CMD...: print the command, then run it unless this is a dry run.
run() {
  echo "+ $(quote "$@")"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# exists CMD...: whether a describe command succeeds. A dry run prints it and
# answers no, so it shows what a deploy to an empty project would create.
exists() {
  echo "+ $(quote "$@")"
  [ "$DRY_RUN" = 0 ] && "$@" >/dev/null 2>&1
}

# capture VAR PLACEHOLDER CMD...: VAR=$(CMD), or PLACEHOLDER in a dry run;
# returns the command's status.
capture() {
  local var="$1" placeholder="$2" output="" status=0
  shift 2
  echo "+ $(quote "$@")"
  if [ "$DRY_RUN" = 0 ]; then output="$("$@")" || status=$?; else output="$placeholder"; fi
  printf -v "$var" '%s' "$output"
  return "$status"
}

# The gcloud forms of the above, always naming the project.
gc() { run gcloud "$@" --project="$PROJECT"; }
gc_exists() { exists gcloud "$@" --project="$PROJECT"; }
gc_capture() { local var="$1" placeholder="$2"; shift 2; capture "$var" "$placeholder" gcloud "$@" --project="$PROJECT"; }

# env_flag NAME=VALUE...: one --set-env-vars flag, plus each optional setting
# named in OPTIONAL_SETTINGS that is set in this environment.
env_flag() {
  local pairs=("$@") name
  for name in $OPTIONAL_SETTINGS; do
    if [ -n "${!name:-}" ]; then pairs+=("$name=${!name}"); fi
  done
  local pair
  for pair in "${pairs[@]}"; do
    case "$pair" in *,*) echo "error: a comma in $pair cannot go into --set-env-vars" >&2; exit 1 ;; esac
  done
  local IFS=,
  echo "--set-env-vars=${pairs[*]}"
}

# stage_function FOLDER DIR: the function folder plus the shared package, as
# gcloud uploads it: main.py at the top, no bytecode caches.
stage_function() {
  local folder="$1" dir="$2"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -R "$ROOT/functions/$folder/." "$dir/"
  cp -R "$ROOT/shared" "$dir/shared"
  find "$dir" -name __pycache__ -type d -prune -exec rm -rf {} +
  find "$dir" -name '*.pyc' -type f -delete
  echo "    staged functions/$folder + shared/ in $dir" >&2
}

# The service account and instance cap of each function.
account_of() {
  case "$1" in
    track) echo "$TRACK_SA" ;;
    admin) echo "$ADMIN_SA" ;;
    aggregate-event|aggregate-http) echo "$AGGREGATE_SA" ;;
  esac
}
max_instances_of() {
  case "$1" in
    track) echo "$TRACK_MAX_INSTANCES" ;;
    admin) echo "$ADMIN_MAX_INSTANCES" ;;
    aggregate-event) echo "$AGGREGATE_EVENT_MAX_INSTANCES" ;;
    aggregate-http) echo "$AGGREGATE_HTTP_MAX_INSTANCES" ;;
  esac
}

# deploy_function NAME FOLDER ENTRY_POINT FLAGS...: stage, then deploy as the
# function's own service account, within its instance cap.
deploy_function() {
  local name="$1" folder="$2" entry="$3"
  shift 3
  stage_function "$folder" "$STAGE_DIR/$name"
  gc functions deploy "$name" --gen2 --region="$REGION" --runtime="$RUNTIME" \
    --source="$STAGE_DIR/$name" --entry-point="$entry" \
    --service-account="$(account_of "$name")" --max-instances="$(max_instances_of "$name")" "$@"
}

# --------------------------------------------------------------- resources --

enable_apis() {
  step "APIs"
  gc services enable cloudfunctions.googleapis.com run.googleapis.com \
    cloudbuild.googleapis.com artifactregistry.googleapis.com eventarc.googleapis.com \
    pubsub.googleapis.com firestore.googleapis.com secretmanager.googleapis.com \
    cloudscheduler.googleapis.com iam.googleapis.com
}

ensure_firestore_database() {
  step "Firestore database"
  gc_exists firestore databases describe --database='(default)' ||
    gc firestore databases create --database='(default)' --location="$FIRESTORE_LOCATION" --type=firestore-native
}

# Producers' ledgers (producers/{id}) expire through a TTL policy on expire_at,
# a day after their newest click leaves the redelivery horizon; so do the dedup
# records of schema 1 click events (clicks/{click_id}), the visitor salts
# (salts/{YYYYMMDD}) two days after their day starts, so that no visitor key can
# be recomputed from an address after that, and the admin's Idempotency-Key
# records (idempotency/{hash}) 24 hours after their create. The field is exempt
# from indexing: nothing queries it, and an index on it only costs writes.
ensure_firestore_ttl() {
  local group
  for group in producers clicks salts idempotency; do
    ensure_ttl_on "$group"
  done
}

ensure_ttl_on() {
  step "Firestore TTL on $1.expire_at"
  # A field with no settings of its own may not be found: it inherits indexes.
  local inherits_indexes ttl_state
  gc_capture inherits_indexes True firestore indexes fields describe expire_at \
    --collection-group="$1" --format='value(indexConfig.usesAncestorConfig)' || inherits_indexes=True
  if [ "$inherits_indexes" = True ]; then
    gc firestore indexes fields update expire_at --collection-group="$1" --disable-indexes
  fi
  gc_capture ttl_state '' firestore indexes fields describe expire_at \
    --collection-group="$1" --format='value(ttlConfig.state)' || ttl_state=''
  case "$ttl_state" in
    ACTIVE|CREATING) ;;
    *) gc firestore fields ttls update expire_at --collection-group="$1" --enable-ttl ;;
  esac
}

# The admin's list filters (targets.<Platform> == true, status in [...], newest
# first) need a composite index for each platform, with and without status, and
# one for status alone; Firestore merges them for several platforms. Keep the
# list in step with shared/platforms.py (tests/test_deploy.py checks).
FILTER_PLATFORMS="Android IPhone WindowsPhone"

ensure_firestore_indexes() {
  step "Firestore indexes for the campaign list"
  local existing platform
  gc_capture existing '' firestore indexes composite list --format='value(collectionGroup,fields[].fieldPath)' ||
    existing=''
  ensure_list_index "$existing" status
  for platform in $FILTER_PLATFORMS; do
    ensure_list_index "$existing" "targets.$platform"
    ensure_list_index "$existing" status "targets.$platform"
  done
}

# ensure_list_index EXISTING FIELD...: an index on the equality FIELDs, then created_at descending,
# unless EXISTING (the listing of composite indexes) has it.
ensure_list_index() {
  local existing="$1" joined field
  shift
  joined=$(IFS=';'; echo "$*")
  grep -q "^campaigns[[:space:]]*${joined//./\\.};created_at" <<<"$existing" && return
  local configs=()
  for field in "$@"; do configs+=("--field-config=field-path=$field,order=ascending"); done
  gc firestore indexes composite create --collection-group=campaigns --query-scope=COLLECTION \
    "${configs[@]}" --field-config=field-path=created_at,order=descending --async
}

ensure_service_account() {
  local email="$1" display_name="$2"
  gc_exists iam service-accounts describe "$email" ||
    gc iam service-accounts create "${email%%@*}" --display-name="$display_name"
}

grant_project_role() {
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$1" \
    --role="$2" --condition=None --format=none
}

# Firestore's roles apply to the whole database; the narrower grants (topic,
# subscription, secret, function) are made on the resource, where it is created.
# Track, the function the internet reaches, only reads Firestore: the visitor
# salts it reads are made ahead by the aggregate's scheduled run.
ensure_service_accounts() {
  step "service accounts"
  ensure_service_account "$TRACK_SA" "o7tracker track (reads campaigns, publishes clicks)"
  ensure_service_account "$ADMIN_SA" "o7tracker admin (campaigns, admin password)"
  ensure_service_account "$AGGREGATE_SA" "o7tracker aggregate (folds clicks into counters)"
  ensure_service_account "$SCHEDULER_SA" "o7tracker scheduler (invokes aggregate-http)"
  grant_project_role "$TRACK_SA" roles/datastore.viewer
  grant_project_role "$ADMIN_SA" roles/datastore.user
  grant_project_role "$AGGREGATE_SA" roles/datastore.user
}

# Once no function runs as the old shared account, it goes, and every grant
# with it. A function this deploy does not manage may still use it: then it
# stays, with a warning.
retire_shared_account() {
  gc_exists iam service-accounts describe "$SHARED_SA" || return 0
  step "retiring the shared service account $SHARED_SA"
  local users
  gc_capture users '' functions list --regions="$REGION" \
    --filter="serviceConfig.serviceAccountEmail=$SHARED_SA" --format='value(name)'
  if [ -n "$users" ]; then
    echo "warning: $SHARED_SA kept: still used by $(echo "$users" | tr '\n' ' ')" >&2
    echo "         (delete those functions or redeploy them with their own accounts, then run again)" >&2
    return 0
  fi
  gc iam service-accounts delete "$SHARED_SA"
}

ensure_topic() {
  gc_exists pubsub topics describe "$1" || gc pubsub topics create "$1"
}

ensure_topics() {
  step "Pub/Sub topics"
  ensure_topic "$CLICKS_TOPIC"
  ensure_topic "$DEAD_LETTER_TOPIC"
  # Events dead-lettered with no subscription on the topic would be dropped.
  gc_exists pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" ||
    gc pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" --topic="$DEAD_LETTER_TOPIC" \
      --message-retention-duration=7d --expiration-period=never
  # The scheduled run counts what waits there by pulling it and handing it back.
  gc pubsub subscriptions add-iam-policy-binding "$DEAD_LETTER_SUBSCRIPTION" \
    --member="serviceAccount:$AGGREGATE_SA" --role=roles/pubsub.subscriber --format=none
  gc pubsub topics add-iam-policy-binding "$CLICKS_TOPIC" --member="serviceAccount:$TRACK_SA" \
    --role=roles/pubsub.publisher --format=none
}

# Partition PARTITION's pull subscription and its filter, as shared/partitions.py's
# subscription_of and subscription_filter spell them (tests/test_deploy.py checks).
subscription_of() {
  if [ "$1" = 0 ]; then echo "$CLICKS_SUBSCRIPTION"; else echo "$CLICKS_SUBSCRIPTION-p$1"; fi
}
subscription_filter() {
  if [ "$1" = 0 ]; then
    echo 'NOT attributes:partition OR attributes.partition = "0"'
  else
    echo "attributes.partition = \"$1\""
  fi
}

# The pull subscriptions that aggregate-http drains (not in event mode), one per
# partition, each given only its partition's clicks. Their events outlive a
# 7-day outage; one that fails 10 deliveries goes to the dead-letter topic,
# which the Pub/Sub service agent must be allowed to do.
ensure_subscriptions() {
  local project_number pubsub_agent partition
  capture project_number '<project-number>' gcloud projects describe "$PROJECT" --format='value(projectNumber)'
  pubsub_agent="serviceAccount:service-$project_number@gcp-sa-pubsub.iam.gserviceaccount.com"
  for ((partition = 0; partition < AGGREGATE_PARTITIONS; partition++)); do
    ensure_subscription "$partition" "$pubsub_agent"
  done
  gc pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" --member="$pubsub_agent" \
    --role=roles/pubsub.publisher --format=none
}

# ensure_subscription PARTITION PUBSUB_AGENT
ensure_subscription() {
  local partition="$1" pubsub_agent="$2" name
  name="$(subscription_of "$partition")"
  step "Pub/Sub subscription $name"
  if gc_exists pubsub subscriptions describe "$name"; then
    if [ "$partition" = 0 ] && [ "$AGGREGATE_PARTITIONS" -gt 1 ]; then note_unfiltered_subscription "$name"; fi
  else
    gc pubsub subscriptions create "$name" --topic="$CLICKS_TOPIC" \
      --message-filter="$(subscription_filter "$partition")" \
      --ack-deadline=60 --message-retention-duration=7d --expiration-period=never \
      --dead-letter-topic="$DEAD_LETTER_TOPIC" --max-delivery-attempts=10
  fi
  local member
  for member in "serviceAccount:$AGGREGATE_SA" "$pubsub_agent"; do
    gc pubsub subscriptions add-iam-policy-binding "$name" --member="$member" \
      --role=roles/pubsub.subscriber --format=none
  done
}

# A subscription's filter is fixed when it is made, so partition 0's from
# before partitions stays unfiltered: harmless, but worth knowing when its
# drain's figures are read.
note_unfiltered_subscription() {
  local filter
  gc_capture filter '' pubsub subscriptions describe "$1" --format='value(filter)'
  if [ -z "$filter" ]; then
    echo "note: $1 has no filter (made before partitions; one cannot be added) and is kept: its drain also" \
      "receives the other partitions' clicks and acks them uncounted, as each is counted from its own" \
      "partition's subscription (docs/counting.md, Partitions)" >&2
  fi
}

# The admin password goes to gcloud on stdin only, never on a command line.
store_password() {
  local verb="$1"
  shift
  echo "+ printf '%s' <redacted> | $(quote gcloud secrets "$verb" "$@" --data-file=- --project="$PROJECT")"
  if [ "$DRY_RUN" = 0 ]; then
    printf '%s' "$ADMIN_PASSWORD" | gcloud secrets "$verb" "$@" --data-file=- --project="$PROJECT"
  fi
}

# 32 letters and digits from the kernel's generator: about 190 bits.
generate_password() {
  local random
  random="$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  echo "${random:0:32}"
}

ensure_admin_secret() {
  step "admin password secret $ADMIN_SECRET"
  if gc_exists secrets describe "$ADMIN_SECRET"; then
    if [ -n "$ADMIN_PASSWORD" ]; then
      store_password versions add "$ADMIN_SECRET"
    fi
  else
    local generated=0
    if [ -z "$ADMIN_PASSWORD" ]; then
      ADMIN_PASSWORD="$(generate_password)"
      generated=1
    fi
    store_password create "$ADMIN_SECRET" --replication-policy=automatic
    if [ "$generated" = 1 ]; then
      echo "    generated the admin password (AUTH_PASSWORD was unset); read it back with:" >&2
      echo "    gcloud secrets versions access latest --secret=$ADMIN_SECRET --project=$PROJECT" >&2
    fi
  fi
  # The admin function alone may read it.
  gc secrets add-iam-policy-binding "$ADMIN_SECRET" --member="serviceAccount:$ADMIN_SA" \
    --role=roles/secretmanager.secretAccessor --format=none
}

# The key campaign ids carry their check with (shared/ids.py): random, made
# once, never printed and never replaced, as a new key would send every link
# issued under the old one to the fallback. Functions read version 1 only.
ensure_campaign_id_key() {
  step "campaign id key secret $ID_KEY_SECRET"
  if ! gc_exists secrets describe "$ID_KEY_SECRET"; then
    echo "+ head -c 32 /dev/urandom | base64 | $(quote gcloud secrets create "$ID_KEY_SECRET" \
      --replication-policy=automatic --data-file=- --project="$PROJECT")"
    if [ "$DRY_RUN" = 0 ]; then
      head -c 32 /dev/urandom | base64 | gcloud secrets create "$ID_KEY_SECRET" \
        --replication-policy=automatic --data-file=- --project="$PROJECT"
    fi
  fi
  # Track checks ids with it, admin issues them: nothing else may read it.
  local account
  for account in "$TRACK_SA" "$ADMIN_SA"; do
    gc secrets add-iam-policy-binding "$ID_KEY_SECRET" --member="serviceAccount:$account" \
      --role=roles/secretmanager.secretAccessor --format=none
  done
}

# An async function: functions-framework serves it with gunicorn and uvicorn
# workers (uvloop, httptools). WORKERS=1 keeps one route cache and one group-
# commit publisher per instance; a click waiting on Pub/Sub holds no thread, so
# one worker takes the whole concurrency, and a stalled Pub/Sub holds each
# click at most PUBLISH_WAIT_SECONDS.
deploy_track() {
  step "function track"
  local OPTIONAL_SETTINGS="CACHE_TTL_SECONDS CACHE_MAX_SIZE NEGATIVE_CACHE_TTL_SECONDS LOOKUP_TIMEOUT_SECONDS
    PUBLISH_WAIT_SECONDS PUBLISH_DEADLINE_SECONDS PUBLISH_BATCH_MAX_MESSAGES PUBLISH_BUFFER_MAX_MESSAGES
    PUBLISH_BUFFER_MAX_BYTES PUBLISH_MAX_IN_FLIGHT"
  local env_vars
  env_vars="$(env_flag "GOOGLE_CLOUD_PROJECT=$PROJECT" "CLICKS_TOPIC=$CLICKS_TOPIC" "FALLBACK_URL=$FALLBACK_URL" \
    "AGGREGATE_PARTITIONS=$AGGREGATE_PARTITIONS" "WORKERS=1")"
  deploy_function track track track --trigger-http --allow-unauthenticated \
    --memory=512Mi --cpu=1 --concurrency="$TRACK_CONCURRENCY" "$env_vars" \
    --set-secrets="CAMPAIGN_ID_KEY=$ID_KEY_SECRET:1"
}

# Open to the internet by default: the function checks HTTP basic auth
# itself. With ADMIN_ACCESS=iam, Cloud Run first lets through only the
# ADMIN_INVOKERS' identity tokens.
deploy_admin() {
  step "function admin"
  local OPTIONAL_SETTINGS="COUNTER_SHARDS MAX_BODY_BYTES LOGIN_MAX_FAILURES LOGIN_WINDOW_SECONDS"
  local track_url="${TRACK_BASE_URL:-}"
  if [ -z "$track_url" ]; then
    gc_capture track_url '<track url>' functions describe track --v2 --region="$REGION" \
      --format='value(serviceConfig.uri)'
  fi
  local env_vars
  env_vars="$(env_flag "GOOGLE_CLOUD_PROJECT=$PROJECT" "AUTH_USER=$AUTH_USER" "TRACK_BASE_URL=$track_url")"
  if [ "$ADMIN_ACCESS" = public ]; then
    deploy_function admin admin admin --trigger-http --allow-unauthenticated \
      "$env_vars" --set-secrets="AUTH_PASSWORD=$ADMIN_SECRET:latest,CAMPAIGN_ID_KEY=$ID_KEY_SECRET:1"
    return
  fi
  deploy_function admin admin admin --trigger-http --no-allow-unauthenticated \
    "$env_vars" --set-secrets="AUTH_PASSWORD=$ADMIN_SECRET:latest,CAMPAIGN_ID_KEY=$ID_KEY_SECRET:1"
  # A redeploy keeps an earlier public grant; it is not an error when there is none.
  gc functions remove-invoker-policy-binding admin --region="$REGION" --member=allUsers --format=none ||
    true
  local member members=()
  IFS=, read -ra members <<< "$ADMIN_INVOKERS"
  for member in "${members[@]}"; do
    gc functions add-invoker-policy-binding admin --region="$REGION" --member="$member" --format=none
  done
}

AGGREGATE_SETTINGS="AGGREGATE_BATCH_SIZE AGGREGATE_FILL_SECONDS AGGREGATE_MAX_SECONDS COUNTER_SHARDS
  REDELIVERY_HORIZON_DAYS DELETE_GRACE_SECONDS DELETE_MAX_DOCUMENTS"

# Counts each click as it is published; a failed commit is retried by Pub/Sub.
deploy_aggregate_event() {
  step "function aggregate-event"
  local OPTIONAL_SETTINGS="$AGGREGATE_SETTINGS"
  local env_vars
  env_vars="$(env_flag "GOOGLE_CLOUD_PROJECT=$PROJECT" "AGGREGATE_MODE=$AGGREGATE_MODE" \
    "AGGREGATE_PARTITIONS=$AGGREGATE_PARTITIONS")"
  deploy_function aggregate-event aggregate aggregate_event \
    --trigger-topic="$CLICKS_TOPIC" --retry --trigger-service-account="$AGGREGATE_SA" "$env_vars"
  gc functions add-invoker-policy-binding aggregate-event --region="$REGION" \
    --member="serviceAccount:$AGGREGATE_SA" --format=none
}

# The scheduled run: drains the pull subscription (not in event mode), refreshes
# the totals the admin shows and sweeps deleted campaigns' counters, so it runs
# in every mode; only the scheduler may call it.
deploy_aggregate_http() {
  step "function aggregate-http"
  local OPTIONAL_SETTINGS="$AGGREGATE_SETTINGS"
  local env_vars
  env_vars="$(env_flag "GOOGLE_CLOUD_PROJECT=$PROJECT" "CLICKS_SUBSCRIPTION=$CLICKS_SUBSCRIPTION" \
    "DEAD_LETTER_SUBSCRIPTION=$DEAD_LETTER_SUBSCRIPTION" "AGGREGATE_MODE=$AGGREGATE_MODE" \
    "AGGREGATE_PARTITIONS=$AGGREGATE_PARTITIONS")"
  # A whole vCPU, which the capacity in docs/counting.md is reckoned on, and room for what a run holds:
  # a batch pulled, and up to 200,000 events handed to the apply step.
  deploy_function aggregate-http aggregate aggregate_http --trigger-http --no-allow-unauthenticated \
    --timeout="$AGGREGATE_TIMEOUT" --memory=1Gi --cpu=1 "$env_vars"
  gc functions add-invoker-policy-binding aggregate-http --region="$REGION" \
    --member="serviceAccount:$SCHEDULER_SA" --format=none
}

# Partition PARTITION's scheduler job.
scheduler_job_of() {
  if [ "$1" = 0 ]; then echo "$SCHEDULER_JOB"; else echo "$SCHEDULER_JOB-p$1"; fi
}

# A scheduled run per partition, each naming its partition in the query but
# partition 0's, which is the job from before partitions, unchanged.
ensure_scheduler_jobs() {
  local url partition query
  gc_capture url '<aggregate-http url>' functions describe aggregate-http --v2 --region="$REGION" \
    --format='value(serviceConfig.uri)'
  for ((partition = 0; partition < AGGREGATE_PARTITIONS; partition++)); do
    if [ "$partition" = 0 ]; then query=""; else query="?partition=$partition"; fi
    ensure_scheduler_job "$(scheduler_job_of "$partition")" "$url" "$query"
  done
}

# ensure_scheduler_job JOB URL QUERY: the token's audience is the bare URL,
# the one Cloud Run checks it against.
ensure_scheduler_job() {
  local job="$1" url="$2" query="$3"
  step "Cloud Scheduler job $job"
  local flags=(--location="$REGION" --schedule="$AGGREGATE_SCHEDULE" --uri="$url$query" --http-method=POST
    --oidc-service-account-email="$SCHEDULER_SA" --oidc-token-audience="$url"
    --attempt-deadline="$AGGREGATE_TIMEOUT")
  if gc_exists scheduler jobs describe "$job" --location="$REGION"; then
    gc scheduler jobs update http "$job" "${flags[@]}"
  else
    gc scheduler jobs create http "$job" "${flags[@]}"
  fi
}

# -------------------------------------------------------- aggregate modes --

# Each path to the aggregator holds only the clicks published since it was
# made: the pull subscription those the drain has not folded yet,
# aggregate-event's trigger those it has not delivered yet. Deleting one path
# right after making the other would drop what it still holds, so scheduled
# and event switch through both, where every new click takes both paths
# (folded twice, counted once), and the next deploy deletes the old path once
# it has caught up. A direct switch is refused before anything is changed.
# With partitions, the pull path is every partition's subscription.
check_mode_switch() {
  step "aggregate mode $AGGREGATE_MODE"
  local subscriptions=() event_function=0 partition
  if gc_exists pubsub subscriptions describe "$CLICKS_SUBSCRIPTION"; then subscriptions+=("$CLICKS_SUBSCRIPTION"); fi
  if gc_exists functions describe aggregate-event --v2 --region="$REGION"; then event_function=1; fi
  for partition in "${FOUND_PARTITIONS[@]}"; do subscriptions+=("$(subscription_of "$partition")"); done
  if [ "$AGGREGATE_MODE" = event ] && [ "${#subscriptions[@]}" -gt 0 ] && [ "$event_function" = 0 ]; then
    echo "error: AGGREGATE_MODE=event would delete ${subscriptions[*]} with the clicks the drain has not" \
      "folded yet: deploy with AGGREGATE_MODE=both first, then with event once the drain has caught up" \
      "(docs/deploying.md, Aggregate modes)" >&2
    exit 2
  fi
  if [ "$AGGREGATE_MODE" = scheduled ] && [ "$event_function" = 1 ] && [ "${#subscriptions[@]}" = 0 ]; then
    echo "error: AGGREGATE_MODE=scheduled would delete aggregate-event with the clicks its trigger has not" \
      "delivered yet, which no pull subscription holds: deploy with AGGREGATE_MODE=both first, then with" \
      "scheduled (docs/deploying.md, Aggregate modes)" >&2
    exit 2
  fi
}

# The partitions past 0 whose subscriptions exist, by number, whatever
# AGGREGATE_PARTITIONS was when they were made.
FOUND_PARTITIONS=()
find_partitions() {
  local names name partition
  gc_capture names '' pubsub subscriptions list --format='value(name.basename())'
  while read -r name; do
    partition="${name#"$CLICKS_SUBSCRIPTION"-p}"
    if [ "$partition" != "$name" ] && [[ $partition =~ ^[1-9][0-9]*$ ]]; then FOUND_PARTITIONS+=("$partition"); fi
  done <<<"$names"
}

# Track instances still running publish to every partition they were deployed
# with, so a subscription past the new count would go undrained, and deleting
# it would leave its partition's clicks matching no subscription. In event mode
# aggregate-event's trigger receives every click, and every partition's
# subscription goes.
check_partitions() {
  [ "$AGGREGATE_MODE" != event ] || return 0
  local partition highest=0
  for partition in "${FOUND_PARTITIONS[@]}"; do
    if [ "$partition" -gt "$highest" ]; then highest="$partition"; fi
  done
  if [ "$highest" -ge "$AGGREGATE_PARTITIONS" ]; then
    echo "error: AGGREGATE_PARTITIONS=$AGGREGATE_PARTITIONS, but $(subscription_of "$highest") exists: the" \
      "number of partitions can only be raised, as clicks that running track instances publish to the higher" \
      "partitions would match no subscription; deploy with at least $((highest + 1)) (docs/counting.md," \
      "Partitions)" >&2
    exit 2
  fi
}

# The path the mode does not use goes last, once the one that stays counts.
remove_unused_path() {
  local partition job name
  case "$AGGREGATE_MODE" in
    scheduled)
      if gc_exists functions describe aggregate-event --v2 --region="$REGION"; then
        step "deleting aggregate-event: AGGREGATE_MODE=scheduled"
        gc functions delete aggregate-event --region="$REGION"
      fi ;;
    event)
      # Each partition's job before the subscriptions, which are how the next
      # deploy finds partitions: a job outliving its subscription would stay.
      for partition in "${FOUND_PARTITIONS[@]}"; do
        job="$(scheduler_job_of "$partition")"
        if gc_exists scheduler jobs describe "$job" --location="$REGION"; then
          step "deleting $job: AGGREGATE_MODE=event, nothing to drain"
          gc scheduler jobs delete "$job" --location="$REGION"
        fi
      done
      for partition in 0 "${FOUND_PARTITIONS[@]}"; do
        name="$(subscription_of "$partition")"
        if gc_exists pubsub subscriptions describe "$name"; then
          step "deleting $name: AGGREGATE_MODE=event, nothing drains it"
          gc pubsub subscriptions delete "$name"
        fi
      done ;;
  esac
}

# -------------------------------------------------------------------- main --

main() {
  if [ "$DRY_RUN" = 1 ]; then
    step "dry run for project $PROJECT in $REGION: gcloud is not called"
  else
    step "deploying o7tracker to project $PROJECT in $REGION"
  fi
  find_partitions
  check_mode_switch
  check_partitions
  enable_apis
  ensure_firestore_database
  ensure_firestore_ttl
  ensure_firestore_indexes
  ensure_service_accounts
  ensure_topics
  if [ "$AGGREGATE_MODE" != event ]; then ensure_subscriptions; fi
  ensure_admin_secret
  ensure_campaign_id_key
  # Readers of click events before their writer: an event field a new track function adds
  # (inactive, say) is then never read by an aggregator that would ignore it.
  if [ "$AGGREGATE_MODE" != scheduled ]; then deploy_aggregate_event; fi
  deploy_aggregate_http
  deploy_track
  deploy_admin
  ensure_scheduler_jobs
  remove_unused_path
  retire_shared_account
  step "done"
  echo "note: the track function checks campaign ids before any lookup once the registry of ids issued" \
    "before ids were keyed exists: write it once with python -m tools.legacy_ids (README, Campaign ids)" >&2
}

main
