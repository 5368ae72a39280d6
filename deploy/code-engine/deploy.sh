#!/usr/bin/env bash
#
# Deploys the pump listeners to IBM Cloud Code Engine: one secret made from an env file, and one app per
# pump (pump-monitor-a with PUMPS=A, pump-monitor-b with PUMPS=B) from the same image. Run it again to
# update: the secret and the apps are updated in place (a new revision per app).
#
# Usage: deploy/code-engine/deploy.sh [ENV_FILE] [options]      (see --help)
set -euo pipefail

SECRET_NAME='pump-monitor-env'
APP_PREFIX='pump-monitor'
PORT=8080

usage() {
  cat <<'USAGE'
Usage: deploy.sh [ENV_FILE] [options]

Creates or updates the Code Engine secret "pump-monitor-env" from ENV_FILE, then creates or updates
one app per pump: pump-monitor-a (PUMPS=A) and pump-monitor-b (PUMPS=B).

Options (each also read from the environment variable in brackets):
  -f, --env-file FILE        env file with DB_*, BASE_URL, BASE_URL_B, API_KEY ... [ENV_FILE]
  -p, --project NAME         Code Engine project to select                     [CE_PROJECT]
  -r, --region REGION        IBM Cloud region, e.g. eu-de, us-south           [CE_REGION]
  -g, --resource-group NAME  resource group to target                          [CE_RESOURCE_GROUP]
  -i, --image IMAGE          image to run, e.g. icr.io/ns/pump-monitor:1.0     [IMAGE]
      --registry-secret NAME Code Engine registry secret for a private image   [REGISTRY_SECRET]
      --ca-file FILE         PostgreSQL CA certificate; stored in the secret as DB_SSLROOTCERT
                             (PEM text, newlines written as \n)                [CA_FILE]
      --pumps "A B"          pumps to deploy (default: A B)                    [PUMPS]
      --visibility VALUE     public, private or project (default: project)     [CE_VISIBILITY]
      --cpu CPU              vCPU per instance (default: 0.25)                 [CE_CPU]
      --memory MEMORY        memory per instance (default: 0.5G)               [CE_MEMORY]
      --logs PUMP            only follow the logs of that pump's app, e.g. --logs A
  -n, --dry-run              print the ibmcloud commands instead of running them
  -h, --help                 show this help

Logs: ibmcloud ce app logs --app pump-monitor-a --follow
USAGE
}

die() {
  printf 'deploy.sh: %s\n' "$*" >&2
  exit 2
}

warn() {
  printf 'deploy.sh: warning: %s\n' "$*" >&2
}

ENV_FILE=${ENV_FILE:-}
CE_PROJECT=${CE_PROJECT:-}
CE_REGION=${CE_REGION:-}
CE_RESOURCE_GROUP=${CE_RESOURCE_GROUP:-}
IMAGE=${IMAGE:-}
REGISTRY_SECRET=${REGISTRY_SECRET:-}
CA_FILE=${CA_FILE:-}
PUMPS=${PUMPS:-A B}
CE_VISIBILITY=${CE_VISIBILITY:-project}
CE_CPU=${CE_CPU:-0.25}
CE_MEMORY=${CE_MEMORY:-0.5G}
LOGS_PUMP=
DRY_RUN=0

need_value() {
  [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -f | --env-file) need_value "$@"; ENV_FILE=$2; shift 2 ;;
    -p | --project) need_value "$@"; CE_PROJECT=$2; shift 2 ;;
    -r | --region) need_value "$@"; CE_REGION=$2; shift 2 ;;
    -g | --resource-group) need_value "$@"; CE_RESOURCE_GROUP=$2; shift 2 ;;
    -i | --image) need_value "$@"; IMAGE=$2; shift 2 ;;
    --registry-secret) need_value "$@"; REGISTRY_SECRET=$2; shift 2 ;;
    --ca-file) need_value "$@"; CA_FILE=$2; shift 2 ;;
    --pumps) need_value "$@"; PUMPS=$2; shift 2 ;;
    --visibility) need_value "$@"; CE_VISIBILITY=$2; shift 2 ;;
    --cpu) need_value "$@"; CE_CPU=$2; shift 2 ;;
    --memory) need_value "$@"; CE_MEMORY=$2; shift 2 ;;
    --logs) need_value "$@"; LOGS_PUMP=$2; shift 2 ;;
    -n | --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [[ -z "$ENV_FILE" ]] || die "unexpected argument $1: the env file is already $ENV_FILE"
      ENV_FILE=$1
      shift
      ;;
  esac
done

# Prints the command, then runs it (or only prints it with --dry-run). Values are never secrets here:
# secrets travel inside the env file, whose path alone is printed.
run() {
  printf '+ ibmcloud'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$DRY_RUN" -eq 1 ]]; then
    return 0
  fi
  ibmcloud "$@"
}

# True when the Code Engine resource exists. In a dry run nothing is asked and nothing exists yet.
exists() {
  local kind=$1 name=$2
  if [[ "$DRY_RUN" -eq 1 ]]; then
    return 1
  fi
  ibmcloud ce "$kind" get --name "$name" >/dev/null 2>&1
}

app_name() {
  printf '%s-%s' "$APP_PREFIX" "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')"
}

if [[ -n "$LOGS_PUMP" ]]; then
  [[ -z "$CE_PROJECT" ]] || run ce project select --name "$CE_PROJECT"
  run ce app logs --app "$(app_name "$LOGS_PUMP")" --follow
  exit 0
fi

# ---- checks before anything is changed -------------------------------------------------------------
[[ -n "$ENV_FILE" ]] || die 'no env file given (deploy.sh ENV_FILE, --env-file or ENV_FILE=...)'
[[ -f "$ENV_FILE" && -r "$ENV_FILE" ]] || die "cannot read the env file $ENV_FILE"
[[ -n "$IMAGE" ]] || die 'no image given (--image or IMAGE=..., e.g. icr.io/NAMESPACE/pump-monitor:TAG)'
[[ -n "$CE_PROJECT" ]] || die 'no Code Engine project given (--project or CE_PROJECT=...)'
case "$CE_VISIBILITY" in
  public | private | project) ;;
  *) die "--visibility must be public, private or project, got $CE_VISIBILITY" ;;
esac
for pump in $PUMPS; do
  case "$pump" in
    A | B) ;;
    *) die "unknown pump $pump (expected A and/or B)" ;;
  esac
done
if [[ -n "$CA_FILE" ]]; then
  [[ -f "$CA_FILE" && -r "$CA_FILE" ]] || die "cannot read the CA file $CA_FILE"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_FILE" || die "$CA_FILE is not a PEM certificate"
fi

has_key() {
  grep -Eq "^[[:space:]]*(export[[:space:]]+)?$1=" "$ENV_FILE"
}

if ! has_key DB_HOST && ! has_key DATABASE_URL; then
  die "$ENV_FILE sets neither DB_HOST nor DATABASE_URL"
fi
for key in BASE_URL BASE_URL_B API_KEY; do
  has_key "$key" || die "$ENV_FILE does not set $key"
done
if ! grep -Eq '^[[:space:]]*DB_SSLMODE=verify-full[[:space:]]*$' "$ENV_FILE"; then
  warn "$ENV_FILE does not set DB_SSLMODE=verify-full (IBM Cloud Databases for PostgreSQL needs it)"
fi
if has_key PUMPS; then
  warn "$ENV_FILE sets PUMPS; each app sets its own PUMPS, which takes precedence"
fi
if grep -Eq '^[[:space:]]*[A-Z_]+=["'\'']' "$ENV_FILE"; then
  warn "$ENV_FILE has quoted values; a secret made from an env file keeps the quotes as part of the value"
fi

if [[ "$DRY_RUN" -eq 0 ]]; then
  command -v ibmcloud >/dev/null 2>&1 || die 'the ibmcloud CLI is not installed (https://cloud.ibm.com/docs/cli)'
  ibmcloud plugin show code-engine >/dev/null 2>&1 ||
    die 'the Code Engine plugin is missing: ibmcloud plugin install code-engine'
fi

# ---- the secret: the env file, with the CA certificate folded in when one is given -----------------
secret_file=$ENV_FILE
if [[ -n "$CA_FILE" ]]; then
  secret_file=$(mktemp)
  trap 'rm -f "$secret_file"' EXIT
  chmod 600 "$secret_file"
  grep -Ev '^[[:space:]]*(export[[:space:]]+)?DB_SSLROOTCERT=' "$ENV_FILE" >"$secret_file" || true
  # One line: the PEM's newlines written as \n, which the listener turns back into newlines.
  printf 'DB_SSLROOTCERT=%s\n' "$(awk 'NF { printf "%s\\n", $0 }' "$CA_FILE")" >>"$secret_file"
fi

if [[ -n "$CE_REGION" ]]; then
  if [[ -n "$CE_RESOURCE_GROUP" ]]; then
    run target -r "$CE_REGION" -g "$CE_RESOURCE_GROUP"
  else
    run target -r "$CE_REGION"
  fi
fi
run ce project select --name "$CE_PROJECT"

if exists secret "$SECRET_NAME"; then
  run ce secret update --name "$SECRET_NAME" --from-env-file "$secret_file"
else
  run ce secret create --name "$SECRET_NAME" --from-env-file "$secret_file"
fi

# ---- one app per pump ------------------------------------------------------------------------------
deployed=()
for pump in $PUMPS; do
  name=$(app_name "$pump")
  args=(
    --name "$name"
    --image "$IMAGE"
    --env PUMPS="$pump"
    --port "$PORT"
    --min-scale 1
    --max-scale 2
    --cpu "$CE_CPU"
    --memory "$CE_MEMORY"
    --user 1000
    --visibility "$CE_VISIBILITY"
    --probe-ready type=http --probe-ready path=/readyz --probe-ready port="$PORT"
    --probe-live type=http --probe-live path=/healthz --probe-live port="$PORT"
  )
  [[ -z "$REGISTRY_SECRET" ]] || args+=(--registry-secret "$REGISTRY_SECRET")
  if exists app "$name"; then
    # The secret reference stays from the create; the update makes a new revision that reads the secret
    # again, so changed values take effect.
    run ce app update "${args[@]}"
  else
    run ce app create "${args[@]}" --env-from-secret "$SECRET_NAME"
  fi
  deployed+=("$name")
done

first=${deployed[0]}
cat <<DONE

Deployed: ${deployed[*]}
  status:  ibmcloud ce app get --name $first
  logs:    ibmcloud ce app logs --app $first --follow
           (or: deploy/code-engine/deploy.sh --project $CE_PROJECT --logs ${PUMPS%% *})
  events:  ibmcloud ce app events --app $first
DONE
