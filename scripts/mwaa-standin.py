#!/usr/bin/env python3
"""Amazon MWAA stand-in: a local HTTP server that speaks the MWAA REST-JSON API.

No emulator implements Amazon MWAA, so the tests point the real `aws-sdk-mwaa` client at
this server instead. It follows the service model (service `airflow`, protocol restJson1,
API version 2020-07-01) for paths, status codes, field names and error bodies. Python 3
standard library only; listens on loopback.

Usage:
    scripts/mwaa-standin.py [--port PORT] [--port-file FILE] [--create-delay SECS] ...

    --port PORT            port on --host (default 0: a free one). The URL is printed on
                           stdout as `http://127.0.0.1:PORT` once the server listens.
    --port-file FILE       also write the port to FILE (atomically) once listening
    --host HOST            address to listen on (default 127.0.0.1)
    --create-delay SECS    CREATING -> AVAILABLE after SECS (default 2)
    --update-delay SECS    UPDATING -> AVAILABLE after SECS (default 2)
    --delete-delay SECS    DELETING -> gone after SECS (default 2)
    --region REGION        region of requests that carry no SigV4 scope (default us-east-1)
    --account ID           account id in generated ARNs (default 123456789012)
    --airflow-version V    AirflowVersion of a CreateEnvironment without one (default 2.10.3)
    --airflow-api URL      InvokeRestApi proxies to this Airflow REST API base URL instead of
                           the in-memory model. Airflow 2 webserver (a base ending in /api/v1,
                           e.g. http://admin:admin@127.0.0.1:8080/api/v1): user:password is
                           sent as basic auth (the webserver needs the basic_auth backend).
                           Airflow 3 api-server (a base ending in /api/v2): user:password is
                           exchanged for a JWT at POST <origin>/auth/token (the simple auth
                           manager's login, 201 {access_token}), sent as a bearer token and
                           fetched again on a 401 (3.0.6 signs it only with
                           [api_auth] jwt_issuer set: "Issuer (iss) must be a string"
                           otherwise); without user:password nothing is sent,
                           for an api-server whose simple auth manager has
                           simple_auth_manager_all_admins = True (it adds an admin token to
                           every request itself).
    --airflow-cli PATH     the CLI endpoint runs `PATH <command>` (a real `airflow`
                           executable) instead of answering from the in-memory model
    --seed FILE            environments to create at start: a JSON object or list of
                           objects, each GetEnvironment-shaped (see POST /_standin/environments)
    --quiet                no per-request log lines on stderr

Client side: endpoint http://127.0.0.1:PORT, any credentials and region (signatures are
not checked). The SDK prepends the host prefixes `api.` / `env.`; the caller strips them.
State is kept per region (taken from the SigV4 credential scope of each request).

AWS operations (restJson1; errors carry the `x-amzn-ErrorType` header and a JSON body
`{"message": "..."}`, except AccessDeniedException: `{"Message": "..."}`):
    GET    /environments                ListEnvironments (?MaxResults=1..25&NextToken=)
    PUT    /environments/{Name}         CreateEnvironment -> {"Arn"}; status CREATING, then
                                        AVAILABLE (or the configured outcome) after the
                                        create delay. ValidationException for a bad name, a
                                        missing required field (ExecutionRoleArn,
                                        SourceBucketArn, DagS3Path, NetworkConfiguration),
                                        not exactly 2 subnets or not 1-5 security groups, an
                                        unknown field, or a name taken in that region (the
                                        identical request again is an idempotent retry: 200)
    GET    /environments/{Name}         GetEnvironment -> {"Environment": {...}}; CreatedAt
                                        and LastUpdate.CreatedAt are epoch seconds (numbers)
    PATCH  /environments/{Name}         UpdateEnvironment -> {"Arn"}; status UPDATING, then
                                        AVAILABLE with LastUpdate.Status SUCCESS (only from
                                        AVAILABLE or UPDATE_FAILED)
    DELETE /environments/{Name}         DeleteEnvironment -> {}; status DELETING, then gone
                                        (ResourceNotFoundException); again while DELETING: {}
    POST   /clitoken/{Name}             CreateCliToken -> {"CliToken", "WebServerHostname"}
    POST   /webtoken/{Name}             CreateWebLoginToken -> {"WebToken", "WebServerHostname"}
    POST   /restapi/{Name}              InvokeRestApi {Path, Method, QueryParameters, Body}
                                        -> {"RestApiStatusCode", "RestApiResponse"}; an
                                        Airflow 4xx/5xx -> RestApiClientException /
                                        RestApiServerException (HTTP 400, as modelled)
    GET|POST|DELETE /tags/{ResourceArn} ListTagsForResource / TagResource / UntagResource
    POST   /aws_mwaa/cli                the Airflow CLI endpoint of the web server:
                                        `Authorization: Bearer CLI_TOKEN`, body = command,
                                        answer {"stdout": BASE64, "stderr": BASE64}

    WebServerHostname is 127.0.0.1:PORT and WebserverUrl http://127.0.0.1:PORT (this
    server, plain HTTP; a CLI token lasts 60 s). CreateCliToken,
    CreateWebLoginToken and InvokeRestApi need the environment in AVAILABLE, UPDATING or
    UPDATE_FAILED (ResourceNotFoundException otherwise).

In-memory Airflow (per environment) answering InvokeRestApi paths (relative to /api/v1 for
an AirflowVersion 2.x, /api/v2 for 3.x; Path at most 64 characters, as modelled):
    GET /dags (limit, offset, dag_id_pattern, only_active, paused), GET|PATCH /dags/{id},
    PATCH /dags?dag_id_pattern= (is_paused), GET|POST /dags/{id}/dagRuns,
    GET|PATCH /dags/{id}/dagRuns/{run_id}, GET /health, GET /version,
    POST /dags/~/dagRuns/list (dag_ids, order_by "-id" or insertion order, page_offset,
    page_limit), GET /dags/{id}/dagRuns/{run_id}/taskInstances/mwaa_dr (state, try_number).
    When a run ends and `ReportStore` is set, the stand-in does what the DR binary does at the
    end of its task: it writes the DAG's configured report (success) or a JSON error with the
    DAG's configured task error (failed) to that directory store as
    runs/<dag_id>/<run_id>.json (ids escaped as the binary escapes them). Without
    `ReportStore` no report is written, as when the binary never ran.
    A triggered run is `queued`, then `running`, then `success` (or the configured outcome)
    after DagRunDuration seconds; on 3.x a trigger without `logical_date` answers 422.
    Unknown paths answer Airflow's 404 problem JSON.
    CLI commands (Airflow 2.10 output formats): version, dags list [-o table|json|plain],
    dags pause|unpause DAG, dags trigger DAG [-r RUN_ID], dags state DAG RUN_ID; anything
    else answers an error on stderr.

Control API (JSON; not part of MWAA; not recorded in the request log). Where an environment
is named, `?region=R` selects the region; without it, the only region that has that name,
else --region.
    GET    /_standin/health               {"ok": true, "port": N}
    GET    /_standin/config               current settings
    POST   /_standin/config               set any of CreateDelay, UpdateDelay, DeleteDelay,
                                          CreateOutcome (AVAILABLE | CREATE_FAILED | any
                                          status), CreateFailureMessage, AirflowVersion,
                                          AirflowApi, AirflowCli (as the flags, or null)
    POST   /_standin/reset                forget everything; settings back to the flags
    GET    /_standin/requests             every AWS/CLI request received, oldest first:
                                          [{seq, time, method, path, query, operation,
                                          region, headers (host, content-type, authorization,
                                          user-agent, x-amz-*...), body (parsed JSON, else
                                          text), status}]; `operation` is the MWAA operation
                                          name (AirflowCli for the CLI endpoint, null for an
                                          unknown route); ?operation=CreateEnvironment filters
    DELETE /_standin/requests             clear the log only
    GET    /_standin/environments         [{Region, Environment}]
    POST   /_standin/environments         seed: {"Environment": {...}} or the bare object,
                                          GetEnvironment-shaped (Name required; Region, or
                                          the region in Arn, or ?region=); missing fields get
                                          defaults, Status defaults to AVAILABLE (a seeded
                                          status stays until changed); optional "Dags":
                                          [...] seeds the in-memory Airflow; a list of such
                                          objects seeds several
    GET    /_standin/environments/{Name}  {Region, Environment, Pending}
    PATCH  /_standin/environments/{Name}  merge fields into the Environment, e.g.
                                          {"Status": "UNAVAILABLE"}; cancels a pending
                                          status change
    DELETE /_standin/environments/{Name}  remove at once
    GET    /_standin/environments/{Name}/airflow   {Settings, Dags, DagRuns}
    POST   /_standin/environments/{Name}/airflow   {"Dags": [id or {dag_id, is_paused, ...}],
                                          "ReplaceDags": bool, "DagRunDuration": SECS,
                                          "DagRunOutcome": "success" | "failed",
                                          "Reports": {dag_id: the report its runs return},
                                          "TaskErrors": {dag_id: the error a failed run
                                          reports}, "ReportStore": a directory store's path
                                          or null,
                                          "Health": {...}, "AirflowApi": URL or null}
    GET    /_standin/faults               pending fault injections
    POST   /_standin/faults               {"Operation": "CreateEnvironment" (any MWAA
                                          operation name), "Error": "ValidationException"
                                          (any error code; the status comes from the model:
                                          ValidationException, RestApiClientException and
                                          RestApiServerException 400, AccessDeniedException
                                          403, ResourceNotFoundException 404,
                                          InternalServerException 500,
                                          ServiceUnavailableException 503; others 400),
                                          "Message": "...",
                                          "Count": 1 (-1 = always), "Name": only this
                                          environment, "Status": HTTP status override,
                                          InvokeRestApi only: "Method" and "PathPrefix" of
                                          the Airflow call to match, "Skip": N matching
                                          calls let through first}: the next Count
                                          matching calls answer that error
    DELETE /_standin/faults               clear them (?name=N: only those of environment N)
    GET    /_standin/next-create          queued one-shot CreateEnvironment overrides
    POST   /_standin/next-create          {"Delay": SECS, "Outcome": "CREATE_FAILED",
                                          "FailureMessage": "...", "Name": only this
                                          environment}: used by the next matching create
    DELETE /_standin/next-create          clear them

Examples (U=http://127.0.0.1:PORT):
    scripts/mwaa-standin.py --port 0 --create-delay 0.5 &
    curl -s -X POST $U/_standin/environments -d '{"Name": "prod", "Dags": ["etl"]}'
    curl -s -X POST $U/_standin/next-create -d '{"Outcome": "CREATE_FAILED"}'
    curl -s -X POST $U/_standin/faults \\
         -d '{"Operation": "CreateEnvironment", "Error": "ValidationException"}'
    curl -s -X PATCH $U/_standin/environments/prod -d '{"Status": "UNAVAILABLE"}'
    curl -s $U/_standin/requests?operation=CreateEnvironment
    curl -s -X POST $U/_standin/reset
"""

import argparse
import base64
import copy
import datetime
import http.server
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

if sys.version_info < (3, 8):
    sys.exit("mwaa-standin: Python 3.8 or newer is needed")

# --------------------------------------------------------------------------------------
# Model facts (service-2.json / the Smithy model of MWAA 2020-07-01)

ERROR_STATUS = {
    "AccessDeniedException": 403,
    "InternalServerException": 500,
    "ResourceNotFoundException": 404,
    "RestApiClientException": 400,
    "RestApiServerException": 400,
    "ServiceUnavailableException": 503,
    "ValidationException": 400,
}

ENVIRONMENT_STATUSES = {
    "CREATING", "CREATE_FAILED", "AVAILABLE", "UPDATING", "DELETING", "DELETED",
    "UNAVAILABLE", "UPDATE_FAILED", "ROLLING_BACK", "CREATING_SNAPSHOT", "PENDING",
    "MAINTENANCE",
}

# States in which the environment's web server answers (CLI token, web token, REST API).
WEBSERVER_UP = {"AVAILABLE", "UPDATING", "UPDATE_FAILED"}

NAME_RE = re.compile(r"^[a-zA-Z][0-9a-zA-Z\-_]*$")
ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
BUCKET_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)?:s3:::[a-z0-9.\-]+$")
ENV_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)?:airflow:([a-z0-9\-]+):(\d{12}):environment/(.+)$")
SUBNET_RE = re.compile(r"^subnet-[a-zA-Z0-9\-._]+$")
SG_RE = re.compile(r"^sg-[a-zA-Z0-9\-._]+$")
WINDOW_RE = re.compile(r"^(MON|TUE|WED|THU|FRI|SAT|SUN):([01]\d|2[0-3]):(00|30)$")
CREDENTIAL_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9\-]+)/")

LOG_MODULES = ("DagProcessingLogs", "SchedulerLogs", "WebserverLogs", "WorkerLogs", "TaskLogs")
LOG_GROUP_SUFFIX = {
    "DagProcessingLogs": "DAGProcessing",
    "SchedulerLogs": "Scheduler",
    "WebserverLogs": "WebServer",
    "WorkerLogs": "Worker",
    "TaskLogs": "Task",
}
LOG_LEVELS = {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}

# Fields of CreateEnvironmentInput / UpdateEnvironmentInput besides Name (the URI label).
CREATE_FIELDS = {
    "ExecutionRoleArn", "SourceBucketArn", "DagS3Path", "NetworkConfiguration",
    "PluginsS3Path", "PluginsS3ObjectVersion", "RequirementsS3Path",
    "RequirementsS3ObjectVersion", "StartupScriptS3Path", "StartupScriptS3ObjectVersion",
    "AirflowConfigurationOptions", "EnvironmentClass", "MaxWorkers", "KmsKey",
    "AirflowVersion", "LoggingConfiguration", "WeeklyMaintenanceWindowStart", "Tags",
    "WebserverAccessMode", "MinWorkers", "Schedulers", "EndpointManagement",
    "MinWebservers", "MaxWebservers", "IdentityCenterConfiguration", "Teams",
}
UPDATE_FIELDS = {
    "ExecutionRoleArn", "AirflowConfigurationOptions", "AirflowVersion", "DagS3Path",
    "EnvironmentClass", "LoggingConfiguration", "MaxWorkers", "MinWorkers",
    "MaxWebservers", "MinWebservers", "WorkerReplacementStrategy", "NetworkConfiguration",
    "PluginsS3Path", "PluginsS3ObjectVersion", "RequirementsS3Path",
    "RequirementsS3ObjectVersion", "Schedulers", "SourceBucketArn", "StartupScriptS3Path",
    "StartupScriptS3ObjectVersion", "WebserverAccessMode", "WeeklyMaintenanceWindowStart",
    "IdentityCenterConfiguration", "Teams",
}

RECORDED_HEADERS = (
    "host", "content-type", "content-length", "authorization", "user-agent",
    "amz-sdk-invocation-id", "amz-sdk-request",
)

CLI_TOKEN_TTL = 60.0


class ApiError(Exception):
    """An MWAA error answer."""

    def __init__(self, code, message, status=None, extra=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or ERROR_STATUS.get(code, 400)
        self.extra = extra or {}


class ControlError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def now():
    return time.time()


def epoch(t):
    """A timestamp as restJson1 sends it: epoch seconds, a JSON number."""
    return round(t, 3)


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()


def parse_bool(value):
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------------------
# In-memory Airflow of one environment


class Airflow:
    """The bits of Airflow's stable REST API (/api/v1) and CLI the tool uses."""

    DAG_DEFAULTS = {
        "dag_display_name": None,
        "root_dag_id": None,
        "is_paused": True,
        "is_active": True,
        "is_subdag": False,
        "last_parsed_time": None,
        "last_pickled": None,
        "last_expired": None,
        "scheduler_lock": None,
        "pickle_id": None,
        "default_view": "grid",
        "fileloc": None,
        "file_token": None,
        "owners": ["airflow"],
        "description": None,
        "schedule_interval": None,
        "timetable_description": None,
        "tags": [],
        "max_active_tasks": 16,
        "max_active_runs": 16,
        "has_task_concurrency_limits": False,
        "has_import_errors": False,
        "next_dagrun": None,
        "next_dagrun_data_interval_start": None,
        "next_dagrun_data_interval_end": None,
        "next_dagrun_create_after": None,
    }

    def __init__(self, version):
        self.version = version
        self.dags = {}  # dag_id -> dict
        self.runs = []  # dicts, with private "_t0", "_duration", "_outcome", "_fixed"
        self.settings = {"DagRunDuration": 1.0, "DagRunOutcome": "success", "AirflowApi": None,
                         "Reports": {}, "TaskErrors": {}, "ReportStore": None}
        self.health = None

    # ---- state

    def upsert_dag(self, spec):
        if isinstance(spec, str):
            spec = {"dag_id": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("dag_id"), str):
            raise ControlError(400, "a DAG is a dag_id string or an object with dag_id")
        dag = self.dags.get(spec["dag_id"])
        if dag is None:
            dag = dict(self.DAG_DEFAULTS)
            dag["dag_id"] = spec["dag_id"]
            dag["fileloc"] = "/usr/local/airflow/dags/%s.py" % spec["dag_id"]
            dag["file_token"] = secrets.token_hex(16)
            dag["last_parsed_time"] = iso(now())
            self.dags[spec["dag_id"]] = dag
        dag.update(spec)

    def run_view(self, run):
        view = {k: v for k, v in run.items() if not k.startswith("_")}
        if not run["_fixed"]:
            elapsed = now() - run["_t0"]
            if elapsed >= run["_duration"]:
                view["state"] = run["_outcome"]
                view["start_date"] = iso(run["_t0"] + min(0.1, run["_duration"] / 2))
                view["end_date"] = iso(run["_t0"] + run["_duration"])
            elif elapsed >= min(0.1, run["_duration"] / 2):
                view["state"] = "running"
                view["start_date"] = iso(run["_t0"] + min(0.1, run["_duration"] / 2))
        if view["state"] in ("success", "failed") and not run.get("_reported"):
            run["_reported"] = True
            self.write_report(run, view["state"])
        return view

    def write_report(self, run, state):
        """What the DR binary does at the end of its task: its report (or JSON error) into
        the directory store `ReportStore` as runs/<dag_id>/<run_id>.json."""
        root = self.settings.get("ReportStore")
        if not root:
            return
        def esc(value):
            return "".join(
                c if (c.isascii() and (c.isalnum() or c in "_-" or (c == "." and i > 0)))
                else "".join("%%%02X" % b for b in c.encode())
                for i, c in enumerate(value))
        if state == "success":
            doc = run["_report"]
        else:
            doc = {"error": {"kind": "failed", "class": "permanent", "retryable": False,
                             "exit_code": 1, "message": run["_error"]}}
        folder = os.path.join(root, "runs", esc(run["dag_id"]))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, esc(run["dag_run_id"]) + ".json")
        with open(path + ".standin-tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".standin-tmp", path)

    def snapshot(self):
        return {
            "Settings": dict(self.settings, Version=self.version),
            "Dags": list(self.dags.values()),
            "DagRuns": [self.run_view(r) for r in self.runs],
        }

    # ---- REST API

    PROBLEM_TYPES = {400: "BadRequest", 401: "Unauthenticated", 403: "PermissionDenied",
                     404: "NotFound", 409: "AlreadyExists", 500: "Unknown"}

    def problem(self, status, title, detail):
        """Airflow's error answer (RFC 7807 problem JSON)."""
        return status, {
            "detail": detail,
            "status": status,
            "title": title,
            "type": "https://airflow.apache.org/docs/apache-airflow/%s/stable-rest-api-ref.html"
            "#section/Errors/%s" % (self.version, self.PROBLEM_TYPES.get(status, "Unknown")),
        }

    def not_found_path(self):
        return 404, {
            "detail": "The requested URL was not found on the server. If you entered the URL"
            " manually please check your spelling and try again.",
            "status": 404,
            "title": "Not Found",
            "type": "about:blank",
        }

    def method_not_allowed(self):
        return 405, {
            "detail": "The method is not allowed for the requested URL.",
            "status": 405,
            "title": "Method Not Allowed",
            "type": "about:blank",
        }

    def dag_missing(self, dag_id):
        return self.problem(404, "DAG not found", "The DAG with dag_id: %s was not found" % dag_id)

    def rest(self, method, path, query, body):
        """One REST call: returns (status, json)."""
        query = {k: (v[-1] if isinstance(v, list) else v) for k, v in (query or {}).items()}
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        if parts[:1] == ["api"] and len(parts) > 1 and parts[1] in ("v1", "v2"):
            parts = parts[2:]
        if parts == ["health"]:
            if method != "GET":
                return self.method_not_allowed()
            beat = iso(now() - 2)
            return 200, self.health or {
                "metadatabase": {"status": "healthy"},
                "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": beat},
                "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": beat},
                "dag_processor": {"status": None, "latest_dag_processor_heartbeat": None},
            }
        if parts == ["version"]:
            if method != "GET":
                return self.method_not_allowed()
            return 200, {"version": self.version, "git_version": None}
        if not parts or parts[0] != "dags":
            return self.not_found_path()
        if len(parts) == 1:
            if method == "GET":
                return 200, self.list_dags(query)
            if method == "PATCH":
                if "dag_id_pattern" not in query:
                    return self.problem(400, "Bad Request", "'dag_id_pattern' is a required property")
                selected = self.select_dags(query)
                for dag in selected:
                    self.patch_dag(dag, body, query)
                return 200, {"dags": selected, "total_entries": len(selected)}
            return self.method_not_allowed()
        dag = self.dags.get(parts[1])
        if len(parts) == 2:
            if method not in ("GET", "PATCH", "DELETE"):
                return self.method_not_allowed()
            if dag is None:
                return self.dag_missing(parts[1])
            if method == "PATCH":
                error = self.patch_dag(dag, body, query)
                if error:
                    return error
            if method == "DELETE":
                del self.dags[parts[1]]
                self.runs = [r for r in self.runs if r["dag_id"] != parts[1]]
                return 204, None
            return 200, dag
        if parts[2] != "dagRuns":
            return self.not_found_path()
        if len(parts) > 4:
            return self.task_rest(method, parts, query)
        if len(parts) == 3:
            if method == "GET":
                if dag is None and parts[1] != "~":
                    return self.dag_missing(parts[1])
                runs = [self.run_view(r) for r in self.runs if parts[1] in ("~", r["dag_id"])]
                if "state" in query:
                    runs = [r for r in runs if r["state"] == query["state"]]
                offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
                return 200, {"dag_runs": runs[offset:offset + limit], "total_entries": len(runs)}
            if method == "POST":
                if dag is None:
                    return self.dag_missing(parts[1])
                return self.trigger(dag, body or {})
            return self.method_not_allowed()
        if parts[1] == "~" and parts[3] == "list":
            if method != "POST":
                return self.method_not_allowed()
            body = body or {}
            ids = body.get("dag_ids")
            runs = [self.run_view(r) for r in self.runs if not ids or r["dag_id"] in ids]
            if body.get("order_by") == "-id":
                runs.reverse()
            offset, limit = int(body.get("page_offset", 0)), int(body.get("page_limit", 100))
            return 200, {"dag_runs": runs[offset:offset + limit], "total_entries": len(runs)}
        run = next((r for r in self.runs if r["dag_id"] == parts[1] and r["dag_run_id"] == parts[3]), None)
        if method not in ("GET", "PATCH"):
            return self.method_not_allowed()
        if run is None:
            return self.problem(
                404, "DAGRun not found",
                "DAGRun with DAG ID: '%s' and DagRun ID: '%s' not found" % (parts[1], parts[3]))
        if method == "PATCH":
            state = (body or {}).get("state")
            if state not in ("success", "failed", "queued"):
                return self.problem(400, "Bad Request", "%r is not one of ['success', 'failed', 'queued'] - 'state'" % state)
            run.update(state=state, _fixed=True, end_date=iso(now()) if state != "queued" else None)
        return 200, self.run_view(run)

    def select_dags(self, query):
        dags = list(self.dags.values())
        pattern = query.get("dag_id_pattern")
        if pattern:
            dags = [d for d in dags if pattern.lower() in d["dag_id"].lower()]
        if parse_bool(query.get("only_active", "true")):
            dags = [d for d in dags if d.get("is_active", True)]
        if "paused" in query:
            paused = parse_bool(query["paused"])
            dags = [d for d in dags if bool(d.get("is_paused")) == paused]
        if "tags" in query:
            dags = [d for d in dags if query["tags"] in [t.get("name") if isinstance(t, dict) else t for t in d.get("tags", [])]]
        return sorted(dags, key=lambda d: d["dag_id"])

    def list_dags(self, query):
        dags = self.select_dags(query)
        offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
        return {"dags": dags[offset:offset + limit], "total_entries": len(dags)}

    def patch_dag(self, dag, body, query):
        if not isinstance(body, dict) or not isinstance(body.get("is_paused"), bool):
            return self.problem(400, "Bad Request", "is_paused: a boolean is required")
        dag["is_paused"] = body["is_paused"]
        return None

    def task_rest(self, method, parts, query):
        """The DR task of a run: /taskInstances/mwaa_dr."""
        if len(parts) < 6 or parts[4] != "taskInstances" or method != "GET":
            return self.not_found_path()
        run = next((r for r in self.runs if r["dag_id"] == parts[1] and r["dag_run_id"] == parts[3]), None)
        if run is None or parts[5] != "mwaa_dr":
            return self.problem(404, "Task instance not found",
                                "Task instance %s of run %s of DAG %s not found" % (parts[5], parts[3], parts[1]))
        view = self.run_view(run)
        state = {"queued": None, "running": "running"}.get(view["state"], view["state"])
        rest = parts[6:]
        if not rest:
            return 200, {"dag_id": parts[1], "dag_run_id": parts[3], "task_id": "mwaa_dr",
                         "state": state, "try_number": 1 if state else 0, "map_index": -1}
        return self.not_found_path()

    def trigger(self, dag, body):
        t = now()
        if self.version.startswith("3.") and "logical_date" not in body:
            return self.problem(422, "Unprocessable Entity", "logical_date: Field required")
        logical = body.get("logical_date") or body.get("execution_date") or iso(t)
        run_id = body.get("dag_run_id") or "manual__" + logical
        if any(r["dag_id"] == dag["dag_id"] and r["dag_run_id"] == run_id for r in self.runs):
            return self.problem(
                409, "Conflict",
                "DAGRun with DAG ID: '%s' and DAGRun ID: '%s' already exists" % (dag["dag_id"], run_id))
        run = {
            "dag_id": dag["dag_id"],
            "dag_run_id": run_id,
            "logical_date": logical,
            "execution_date": logical,
            "data_interval_start": logical,
            "data_interval_end": logical,
            "start_date": None,
            "end_date": None,
            "last_scheduling_decision": None,
            "run_type": "manual",
            "state": "queued",
            "external_trigger": True,
            "conf": body.get("conf") or {},
            "note": body.get("note"),
            "_t0": t,
            "_duration": float(self.settings["DagRunDuration"]),
            "_outcome": self.settings["DagRunOutcome"],
            "_report": self.settings["Reports"].get(dag["dag_id"], {"dag_id": dag["dag_id"]}),
            "_error": self.settings["TaskErrors"].get(
                dag["dag_id"], "%s failed on the metadata database: the stand-in's configured failure" % dag["dag_id"]),
            "_fixed": False,
        }
        self.runs.append(run)
        return 200, self.run_view(run)

    # ---- CLI

    @staticmethod
    def table(cols, rows):
        """Airflow's default (`table`) CLI output."""
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
        line = lambda vals: " | ".join(v.ljust(w) for v, w in zip(vals, widths))
        return "\n".join([line(cols), "=+=".join("=" * w for w in widths)] + [line(r) for r in rows]) + "\n"

    def cli(self, command):
        """One `airflow` CLI command, in the output formats of Airflow 2.10: (stdout, stderr)."""
        try:
            argv = shlex.split(command)
        except ValueError as e:
            return "", "airflow command error: %s\n" % e
        if not argv:
            return "", "airflow command error: the following arguments are required: GROUP_OR_COMMAND\n"
        if argv == ["version"]:
            return self.version + "\n", ""
        sub, rest = (argv[1] if len(argv) > 1 else None), argv[2:]
        if argv[0] == "dags" and sub == "list":
            fmt = "table"
            for flag in ("-o", "--output"):
                if flag in rest and rest.index(flag) + 1 < len(rest):
                    fmt = rest[rest.index(flag) + 1]
            dags = self.select_dags({})
            if fmt == "json":
                return json.dumps([{"dag_id": d["dag_id"], "fileloc": d.get("fileloc"),
                                    "owners": d.get("owners") or [],
                                    "is_paused": str(bool(d.get("is_paused")))} for d in dags]) + "\n", ""
            cols = ["dag_id", "fileloc", "owners", "is_paused"]
            if fmt == "plain":
                rows = [[d["dag_id"], d.get("fileloc") or "", str(d.get("owners") or []),
                         str(bool(d.get("is_paused")))] for d in dags]
                return "\n".join(" ".join(r) for r in [cols] + rows) + "\n", ""
            rows = [[d["dag_id"], d.get("fileloc") or "", ", ".join(d.get("owners") or []),
                     str(bool(d.get("is_paused")))] for d in dags]
            return self.table(cols, rows), ""
        if argv[0] == "dags" and sub in ("pause", "unpause") and rest:
            paused = sub == "pause"
            changed = [d for d in self.dags.values()
                       if d["dag_id"] == rest[0] and bool(d.get("is_paused")) != paused]
            if not changed:
                return "No %s DAGs were found\n" % ("unpaused" if paused else "paused"), ""
            for dag in changed:
                dag["is_paused"] = paused
            return self.table(["dag_id", "is_paused"], [[d["dag_id"], str(paused)] for d in changed]), ""
        if argv[0] == "dags" and sub == "trigger" and rest:
            dag = self.dags.get(rest[0])
            if dag is None:
                return "", "airflow.exceptions.DagNotFound: Dag id %s not found in DagModel\n" % rest[0]
            body = {}
            for flag in ("-r", "--run-id"):
                if flag in rest and rest.index(flag) + 1 < len(rest):
                    body["dag_run_id"] = rest[rest.index(flag) + 1]
            status, run = self.trigger(dag, body)
            if status != 200:
                return "", run["detail"] + "\n"
            cols = ["conf", "dag_id", "dag_run_id", "data_interval_start", "data_interval_end",
                    "end_date", "external_trigger", "last_scheduling_decision", "logical_date",
                    "run_type", "start_date", "state"]
            return self.table(cols, [[str(run.get(c)) for c in cols]]), ""
        if argv[0] == "dags" and sub == "state" and len(rest) >= 2:
            run = next((r for r in self.runs if r["dag_id"] == rest[0]
                        and rest[1] in (r["dag_run_id"], r["logical_date"])), None)
            return "%s\n" % (self.run_view(run)["state"] if run else "None"), ""
        if argv[0] in ("dags", "version"):
            return "", "mwaa-standin: not modelled here: airflow %s\n" % command
        return "", ("airflow command error: argument GROUP_OR_COMMAND: invalid choice: '%s', "
                    "see help above.\n" % argv[0])


# --------------------------------------------------------------------------------------
# State


class Record:
    """One environment: its GetEnvironment object, a pending status change, its Airflow."""

    def __init__(self, region, env, airflow):
        self.region = region
        self.env = env
        self.pending = None  # (at, kind, payload): kind "status" or "delete"
        self.create_request = None
        self.airflow = airflow


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.port = 0
        self.tokens = {}  # (scheme, host:port, user) -> JWT of an Airflow 3 api-server
        self.reset()

    def reset(self):
        with self.lock:
            a = self.args
            self.config = {
                "CreateDelay": a.create_delay,
                "UpdateDelay": a.update_delay,
                "DeleteDelay": a.delete_delay,
                "CreateOutcome": "AVAILABLE",
                "CreateFailureMessage": "The environment could not be created (injected failure).",
                "AirflowVersion": a.airflow_version,
                "AirflowApi": a.airflow_api,
                "AirflowCli": a.airflow_cli,
                "Region": a.region,
                "Account": a.account,
            }
            self.envs = {}  # (region, name) -> Record
            self.requests = []
            self.seq = 0
            self.faults = []
            self.next_create = []
            self.cli_tokens = {}  # token -> (region, name, expiry)

    # ---- lookups and bookkeeping (call with the lock held)

    def settle(self):
        t = now()
        for key, rec in list(self.envs.items()):
            if rec.pending and rec.pending[0] <= t:
                _, kind, payload = rec.pending
                rec.pending = None
                if kind == "delete":
                    del self.envs[key]
                    continue
                rec.env["Status"] = payload["Status"]
                if "LastUpdate" in payload:
                    rec.env["LastUpdate"] = payload["LastUpdate"]

    def find(self, name, region=None):
        self.settle()
        if region:
            return self.envs.get((region, name))
        hits = [rec for (r, n), rec in self.envs.items() if n == name]
        if len(hits) == 1:
            return hits[0]
        return self.envs.get((self.config["Region"], name))

    def take_fault(self, operation, name, body=None):
        for fault in self.faults:
            if fault.get("Method") and (body or {}).get("Method") != fault["Method"]:
                continue
            if fault.get("PathPrefix") and not str((body or {}).get("Path", "")).startswith(fault["PathPrefix"]):
                continue
            if fault["Operation"] == operation and fault.get("Name") in (None, name):
                if fault.get("Skip", 0) > 0:
                    fault["Skip"] -= 1
                    continue
                if fault["Count"] > 0:
                    fault["Count"] -= 1
                if fault["Count"] == 0:
                    self.faults.remove(fault)
                return ApiError(fault["Error"], fault.get("Message") or "Injected %s" % fault["Error"],
                                fault.get("Status"))
        return None

    def take_next_create(self, name):
        for entry in self.next_create:
            if entry.get("Name") in (None, name):
                self.next_create.remove(entry)
                return entry
        return {}

    def airflow_api_of(self, rec):
        url = rec.airflow.settings.get("AirflowApi")
        return url if url is not None else self.config["AirflowApi"]

    # ---- environment objects

    def logging_configuration(self, region, name, given, account=None):
        out = {}
        for module in LOG_MODULES:
            spec = (given or {}).get(module) or {}
            enabled = bool(spec.get("Enabled", False))
            entry = {"Enabled": enabled, "LogLevel": spec.get("LogLevel", "INFO")}
            if enabled:
                entry["CloudWatchLogGroupArn"] = "arn:aws:logs:%s:%s:log-group:airflow-%s-%s" % (
                    region, account or self.config["Account"], name, LOG_GROUP_SUFFIX[module])
            out[module] = entry
        return out

    def complete_environment(self, region, name, env, status):
        """Fills what the service computes or defaults, keeping what `env` has."""
        t = now()
        arn_match = ENV_ARN_RE.match(env.get("Arn") or "")
        account = arn_match.group(3) if arn_match else self.config["Account"]
        out = {
            "Name": name,
            "Status": status,
            "Arn": "arn:aws:airflow:%s:%s:environment/%s" % (region, account, name),
            "CreatedAt": epoch(t),
            "WebserverUrl": "http://127.0.0.1:%d" % self.port,
            "ServiceRoleArn": "arn:aws:iam::%s:role/aws-service-role/airflow.amazonaws.com/"
            "AWSServiceRoleForAmazonMWAA" % account,
            "AirflowVersion": self.config["AirflowVersion"],
            "EnvironmentClass": "mw1.small",
            "MaxWorkers": 10,
            "MinWorkers": 1,
            "Schedulers": 2,
            "MinWebservers": 2,
            "MaxWebservers": 2,
            "WebserverAccessMode": "PRIVATE_ONLY",
            "EndpointManagement": "SERVICE",
            "WeeklyMaintenanceWindowStart": "SUN:03:00",
            "AirflowConfigurationOptions": {},
            "Tags": {},
            "CeleryExecutorQueue": "arn:aws:sqs:%s:%s:airflow-celery-%s" % (
                region, account, uuid.uuid5(uuid.NAMESPACE_URL, region + name)),
        }
        out.update({k: v for k, v in env.items() if v is not None})
        given = env.get("LoggingConfiguration")
        if not (isinstance(given, dict) and any(
                isinstance(v, dict) and "CloudWatchLogGroupArn" in v for v in given.values())):
            # An input-shaped (or no) configuration; a GetEnvironment-shaped one is kept.
            out["LoggingConfiguration"] = self.logging_configuration(region, name, given, account)
        return out

    # ---- operations

    def list_environments(self, region, query):
        max_results = query.get("MaxResults")
        if max_results is not None:
            try:
                max_results = int(max_results)
            except ValueError:
                raise ApiError("ValidationException", "MaxResults must be an integer")
            if not 1 <= max_results <= 25:
                raise ApiError("ValidationException",
                               "1 validation error detected: Value '%d' at 'maxResults' failed to "
                               "satisfy constraint: Member must have value between 1 and 25" % max_results)
        else:
            max_results = 25
        start = 0
        token = query.get("NextToken")
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except Exception:
                raise ApiError("ValidationException", "Invalid NextToken")
        self.settle()
        names = [n for (r, n) in self.envs if r == region]
        page = names[start:start + max_results]
        out = {"Environments": page}
        if start + max_results < len(names):
            out["NextToken"] = base64.urlsafe_b64encode(str(start + max_results).encode()).decode()
        return out

    def validate_create(self, name, body):
        problems = []
        if not (1 <= len(name) <= 80) or not NAME_RE.match(name):
            problems.append("Value '%s' at 'name' failed to satisfy constraint: Member must satisfy "
                            "regular expression pattern: ^[a-zA-Z][0-9a-zA-Z-_]*$" % name)
        for field in ("ExecutionRoleArn", "SourceBucketArn", "DagS3Path", "NetworkConfiguration"):
            if body.get(field) in (None, ""):
                problems.append("Value null at '%s' failed to satisfy constraint: Member must not "
                                "be null" % (field[0].lower() + field[1:]))
        role = body.get("ExecutionRoleArn")
        if isinstance(role, str) and role and not ROLE_ARN_RE.match(role):
            problems.append("Value '%s' at 'executionRoleArn' failed to satisfy constraint" % role)
        bucket = body.get("SourceBucketArn")
        if isinstance(bucket, str) and bucket and not BUCKET_ARN_RE.match(bucket):
            problems.append("Value '%s' at 'sourceBucketArn' failed to satisfy constraint" % bucket)
        net = body.get("NetworkConfiguration")
        if isinstance(net, dict):
            subnets = net.get("SubnetIds") or []
            groups = net.get("SecurityGroupIds") or []
            if len(subnets) != 2 or not all(isinstance(s, str) and SUBNET_RE.match(s) for s in subnets):
                problems.append("NetworkConfiguration.SubnetIds must hold exactly 2 subnet ids")
            if not 1 <= len(groups) <= 5 or not all(isinstance(s, str) and SG_RE.match(s) for s in groups):
                problems.append("NetworkConfiguration.SecurityGroupIds must hold 1 to 5 security group ids")
        elif net is not None:
            problems.append("NetworkConfiguration must be an object")
        self.validate_common(body, problems)
        if problems:
            raise ApiError("ValidationException", "%d validation error%s detected: %s" % (
                len(problems), "" if len(problems) == 1 else "s", "; ".join(problems)))

    @staticmethod
    def validate_common(body, problems):
        window = body.get("WeeklyMaintenanceWindowStart")
        if window is not None and not (isinstance(window, str) and WINDOW_RE.match(window)):
            problems.append("WeeklyMaintenanceWindowStart must look like TUE:03:30")
        mode = body.get("WebserverAccessMode")
        if mode is not None and mode not in ("PRIVATE_ONLY", "PUBLIC_ONLY", "PUBLIC_AND_PRIVATE"):
            problems.append("WebserverAccessMode must be PRIVATE_ONLY, PUBLIC_ONLY or PUBLIC_AND_PRIVATE")
        mgmt = body.get("EndpointManagement")
        if mgmt is not None and mgmt not in ("CUSTOMER", "SERVICE"):
            problems.append("EndpointManagement must be CUSTOMER or SERVICE")
        for field, low, high in (("MaxWorkers", 1, None), ("MinWorkers", 1, None),
                                 ("Schedulers", None, 5), ("MinWebservers", 1, 5),
                                 ("MaxWebservers", 1, 5)):
            value = body.get(field)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or \
                    (low is not None and value < low) or (high is not None and value > high):
                problems.append("%s out of range: %r" % (field, value))
        logging_cfg = body.get("LoggingConfiguration")
        if isinstance(logging_cfg, dict):
            for module, spec in logging_cfg.items():
                if module not in LOG_MODULES or not isinstance(spec, dict) or \
                        not isinstance(spec.get("Enabled"), bool) or spec.get("LogLevel") not in LOG_LEVELS:
                    problems.append("LoggingConfiguration.%s needs Enabled (boolean) and LogLevel" % module)

    def create_environment(self, region, name, body):
        self.settle()
        unknown = sorted(set(body) - CREATE_FIELDS - {"Name"})
        if unknown:
            raise ApiError("ValidationException", "Unknown field(s): %s" % ", ".join(unknown))
        self.validate_create(name, body)
        existing = self.envs.get((region, name))
        if existing is not None:
            # CreateEnvironment is idempotent in the model: a retry of the same request
            # answers the same; another request for a taken name is refused.
            if existing.create_request == body:
                return {"Arn": existing.env["Arn"]}
            raise ApiError("ValidationException", "Environment %s already exists." % name)
        env = {k: copy.deepcopy(v) for k, v in body.items() if k in CREATE_FIELDS}
        env = self.complete_environment(region, name, env, "CREATING")
        rec = Record(region, env, Airflow(env["AirflowVersion"]))
        rec.create_request = copy.deepcopy(body)
        override = self.take_next_create(name)
        delay = float(override.get("Delay", self.config["CreateDelay"]))
        outcome = override.get("Outcome", self.config["CreateOutcome"])
        payload = {"Status": outcome}
        if outcome == "CREATE_FAILED":
            payload["LastUpdate"] = {
                "Status": "FAILED",
                "CreatedAt": env["CreatedAt"],
                "Error": {
                    "ErrorCode": "INCORRECT_CONFIGURATION",
                    "ErrorMessage": override.get("FailureMessage", self.config["CreateFailureMessage"]),
                },
            }
        rec.pending = (now() + delay, "status", payload)
        self.envs[(region, name)] = rec
        self.settle()
        return {"Arn": env["Arn"]}

    def need(self, region, name):
        self.settle()
        rec = self.envs.get((region, name))
        if rec is None:
            raise ApiError("ResourceNotFoundException", "Environment %s not found." % name)
        return rec

    def get_environment(self, region, name):
        return {"Environment": copy.deepcopy(self.need(region, name).env)}

    def update_environment(self, region, name, body):
        rec = self.need(region, name)
        unknown = sorted(set(body) - UPDATE_FIELDS - {"Name"})
        if unknown:
            raise ApiError("ValidationException", "Unknown field(s): %s" % ", ".join(unknown))
        problems = []
        self.validate_common(body, problems)
        net = body.get("NetworkConfiguration")
        if net is not None:
            groups = net.get("SecurityGroupIds") if isinstance(net, dict) else None
            if not isinstance(groups, list) or not 1 <= len(groups) <= 5 or set(net) - {"SecurityGroupIds"}:
                problems.append("NetworkConfiguration of an update holds only SecurityGroupIds (1 to 5)")
        if problems:
            raise ApiError("ValidationException", "; ".join(problems))
        if rec.env["Status"] not in ("AVAILABLE", "UPDATE_FAILED"):
            raise ApiError("ValidationException", "Environment %s is in status %s and cannot be updated."
                           % (name, rec.env["Status"]))
        t = now()
        for field, value in body.items():
            if field in ("Name", "WorkerReplacementStrategy"):
                continue
            if field == "Teams":
                teams = dict(rec.env.get("Teams") or {})
                teams.update((value or {}).get("AddOrUpdate") or {})
                for team in (value or {}).get("Remove") or []:
                    teams.pop(team, None)
                rec.env["Teams"] = teams
            elif field == "NetworkConfiguration":
                rec.env.setdefault("NetworkConfiguration", {})["SecurityGroupIds"] = value["SecurityGroupIds"]
            elif field == "LoggingConfiguration":
                merged = dict(rec.env.get("LoggingConfiguration") or {})
                merged.update(self.logging_configuration(region, name, value))
                for module in LOG_MODULES:
                    if module not in value and module in (rec.env.get("LoggingConfiguration") or {}):
                        merged[module] = rec.env["LoggingConfiguration"][module]
                rec.env["LoggingConfiguration"] = merged
            else:
                rec.env[field] = copy.deepcopy(value)
        if "AirflowVersion" in body:
            rec.airflow.version = body["AirflowVersion"]
        last = {"Status": "PENDING", "CreatedAt": epoch(t)}
        if "WorkerReplacementStrategy" in body:
            last["WorkerReplacementStrategy"] = body["WorkerReplacementStrategy"]
        rec.env["Status"] = "UPDATING"
        rec.env["LastUpdate"] = last
        done = dict(last, Status="SUCCESS")
        rec.pending = (t + float(self.config["UpdateDelay"]), "status",
                       {"Status": "AVAILABLE", "LastUpdate": done})
        self.settle()
        return {"Arn": rec.env["Arn"]}

    def delete_environment(self, region, name):
        rec = self.need(region, name)
        if rec.env["Status"] == "DELETING":
            return {}  # idempotent in the model
        if rec.env["Status"] in ("CREATING", "UPDATING"):
            raise ApiError("ValidationException", "Environment %s is in status %s and cannot be deleted."
                           % (name, rec.env["Status"]))
        rec.env["Status"] = "DELETING"
        rec.pending = (now() + float(self.config["DeleteDelay"]), "delete", None)
        self.settle()
        return {}

    def webserver(self, region, name):
        rec = self.need(region, name)
        if rec.env["Status"] not in WEBSERVER_UP:
            raise ApiError("ResourceNotFoundException", "Environment %s is not available (status %s)."
                           % (name, rec.env["Status"]))
        return rec

    def create_cli_token(self, region, name):
        self.webserver(region, name)
        token = secrets.token_urlsafe(32)
        t = now()
        self.cli_tokens = {k: v for k, v in self.cli_tokens.items() if v[2] > t}
        self.cli_tokens[token] = (region, name, t + CLI_TOKEN_TTL)
        return {"CliToken": token, "WebServerHostname": "127.0.0.1:%d" % self.port}

    def create_web_login_token(self, region, name):
        self.webserver(region, name)
        return {"WebToken": secrets.token_urlsafe(32), "WebServerHostname": "127.0.0.1:%d" % self.port}

    def tags_target(self, region, arn):
        m = ENV_ARN_RE.match(arn)
        if not m:
            raise ApiError("ValidationException", "Invalid ResourceArn: %s" % arn)
        return self.need(m.group(2), m.group(4))

    # ---- control API

    def seed(self, body, region=None):
        if not isinstance(body, dict):
            raise ControlError(400, "an environment is a JSON object")
        dags = body.get("Dags")
        env = body.get("Environment", body)
        env = {k: v for k, v in env.items() if k not in ("Dags", "Region")}
        name = env.get("Name")
        if not isinstance(name, str) or not name:
            raise ControlError(400, "Name is required")
        arn_match = ENV_ARN_RE.match(env.get("Arn") or "")
        region = body.get("Region") or region or (arn_match.group(2) if arn_match else None) \
            or self.config["Region"]
        status = env.get("Status", "AVAILABLE")
        if status not in ENVIRONMENT_STATUSES:
            raise ControlError(400, "unknown Status %r" % status)
        env = self.complete_environment(region, name, env, status)
        if "CreatedAt" in env and isinstance(env["CreatedAt"], str):
            try:
                env["CreatedAt"] = epoch(datetime.datetime.fromisoformat(
                    env["CreatedAt"].replace("Z", "+00:00")).timestamp())
            except ValueError:
                raise ControlError(400, "CreatedAt: epoch seconds or an ISO 8601 date")
        rec = Record(region, env, Airflow(env.get("AirflowVersion", self.config["AirflowVersion"])))
        for dag in dags or []:
            rec.airflow.upsert_dag(dag)
        self.envs[(region, name)] = rec
        return {"Region": region, "Environment": env}


# --------------------------------------------------------------------------------------
# HTTP


def make_handler(state, quiet):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def version_string(self):
            return "mwaa-standin"

        def log_message(self, fmt, *args):
            if not quiet:
                sys.stderr.write("mwaa-standin: %s %s\n" % (self.address_string(), fmt % args))

        # ---- plumbing

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def send(self, status, payload, headers=None, raw=None):
            data = raw if raw is not None else (
                b"" if payload is None else json.dumps(payload).encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return status

        def send_api_error(self, err):
            if err.code == "AccessDeniedException":
                body = {"Message": err.message}
            else:
                body = {"message": err.message}
            body.update(err.extra)
            return self.send(err.status, body, {"x-amzn-ErrorType": err.code})

        def do_GET(self):
            self.dispatch()

        def do_PUT(self):
            self.dispatch()

        def do_POST(self):
            self.dispatch()

        def do_PATCH(self):
            self.dispatch()

        def do_DELETE(self):
            self.dispatch()

        def dispatch(self):
            url = urllib.parse.urlsplit(self.path)
            raw_parts = [p for p in url.path.split("/") if p]
            parts = [urllib.parse.unquote(p) for p in raw_parts]
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            try:
                body_bytes = self.read_body()
            except (ValueError, OSError):
                self.close_connection = True
                return self.send(400, {"message": "unreadable request body"})
            if parts[:1] == ["_standin"]:
                return self.control(parts[1:], query, body_bytes)
            return self.aws(url, parts, query, body_bytes)

        # ---- AWS side

        def route(self, parts):
            m = self.command
            if parts == ["environments"] and m == "GET":
                return "ListEnvironments", None
            if len(parts) == 2 and parts[0] == "environments":
                op = {"GET": "GetEnvironment", "PUT": "CreateEnvironment",
                      "PATCH": "UpdateEnvironment", "DELETE": "DeleteEnvironment"}.get(m)
                return op, parts[1]
            if len(parts) == 2 and m == "POST" and parts[0] in ("clitoken", "webtoken", "restapi"):
                op = {"clitoken": "CreateCliToken", "webtoken": "CreateWebLoginToken",
                      "restapi": "InvokeRestApi"}[parts[0]]
                return op, parts[1]
            if len(parts) >= 2 and parts[0] == "tags":
                # The SDK percent-encodes the ARN's "/"; an unencoded one spans segments.
                op = {"GET": "ListTagsForResource", "POST": "TagResource",
                      "DELETE": "UntagResource"}.get(m)
                return op, "/".join(parts[1:])
            if parts == ["aws_mwaa", "cli"] and m == "POST":
                return "AirflowCli", None
            return None, None

        def aws(self, url, parts, query, body_bytes):
            operation, label = self.route(parts)
            auth = self.headers.get("Authorization", "")
            scope = CREDENTIAL_RE.search(auth)
            region = scope.group(1) if scope else state.config["Region"]
            text = body_bytes.decode("utf-8", "replace")
            try:
                parsed = json.loads(text) if text.strip() else None
            except ValueError:
                parsed = None
            entry = {
                "method": self.command,
                "path": url.path,
                "query": query,
                "operation": operation,
                "region": region,
                "headers": {k: self.headers[k] for k in RECORDED_HEADERS if k in self.headers},
                "body": parsed if parsed is not None or not text else text,
            }
            entry["headers"].update({k.lower(): v for k, v in self.headers.items()
                                     if k.lower().startswith("x-amz")})
            with state.lock:
                state.seq += 1
                entry = dict({"seq": state.seq, "time": epoch(now())}, **entry)
                state.requests.append(entry)
            status = self.aws_call(operation, label, region, query, parsed, text)
            entry["status"] = status

        def aws_call(self, operation, label, region, query, parsed, text):
            if operation is None:
                return self.send_api_error(ApiError(
                    "UnknownOperationException", "No operation matches %s %s" % (self.command, self.path), 404))
            if operation == "AirflowCli":
                return self.airflow_cli(text)
            body = parsed if parsed is not None else {}
            if text.strip() and parsed is None or not isinstance(body, dict):
                return self.send_api_error(ApiError("ValidationException", "The request body is not a JSON object."))
            proxy = None
            try:
                with state.lock:
                    fault = state.take_fault(operation, label, body)
                    if fault:
                        raise fault
                    if operation == "ListEnvironments":
                        out = state.list_environments(region, query)
                    elif operation == "CreateEnvironment":
                        out = state.create_environment(region, label, body)
                    elif operation == "GetEnvironment":
                        out = state.get_environment(region, label)
                    elif operation == "UpdateEnvironment":
                        out = state.update_environment(region, label, body)
                    elif operation == "DeleteEnvironment":
                        out = state.delete_environment(region, label)
                    elif operation == "CreateCliToken":
                        out = state.create_cli_token(region, label)
                    elif operation == "CreateWebLoginToken":
                        out = state.create_web_login_token(region, label)
                    elif operation == "InvokeRestApi":
                        out, proxy = self.invoke_rest_api(region, label, body)
                    elif operation == "ListTagsForResource":
                        out = {"Tags": dict(state.tags_target(region, label).env.get("Tags") or {})}
                    elif operation == "TagResource":
                        tags = body.get("Tags")
                        if not isinstance(tags, dict) or not tags:
                            raise ApiError("ValidationException", "Tags is required")
                        state.tags_target(region, label).env.setdefault("Tags", {}).update(tags)
                        out = {}
                    elif operation == "UntagResource":
                        rec = state.tags_target(region, label)
                        keys = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("tagKeys", [])
                        for key in keys:
                            (rec.env.get("Tags") or {}).pop(key, None)
                        out = {}
                if proxy is not None:
                    out = self.proxy_rest_api(*proxy)
            except ApiError as err:
                return self.send_api_error(err)
            except Exception as err:  # a bug here must not look like a hang to the client
                sys.stderr.write("mwaa-standin: internal error: %r\n" % err)
                return self.send_api_error(ApiError("InternalServerException", "Internal error: %s" % err))
            return self.send(200, out)

        # ---- InvokeRestApi and the CLI

        def invoke_rest_api(self, region, name, body):
            rec = state.webserver(region, name)
            path, method = body.get("Path"), body.get("Method")
            if not isinstance(path, str) or not 1 <= len(path) <= 64:
                raise ApiError("ValidationException", "Path is required, 1 to 64 characters")
            if method not in ("GET", "PUT", "POST", "DELETE", "PATCH"):
                raise ApiError("ValidationException",
                               "Method must be one of GET, PUT, POST, DELETE, PATCH")
            query = body.get("QueryParameters") or {}
            if not isinstance(query, dict):
                raise ApiError("ValidationException", "QueryParameters must be a JSON object")
            api = state.airflow_api_of(rec)
            if api:
                return None, (api, path, method, query, body.get("Body"))
            status, payload = rec.airflow.rest(method, path, query, body.get("Body"))
            return self.rest_result(status, copy.deepcopy(payload)), None

        @staticmethod
        def rest_result(status, payload):
            if 200 <= status < 300:
                return {"RestApiStatusCode": status, "RestApiResponse": payload if payload is not None else {}}
            code = "RestApiClientException" if status < 500 else "RestApiServerException"
            raise ApiError(code, "The Apache Airflow REST API answered HTTP %d." % status,
                           extra={"RestApiStatusCode": status, "RestApiResponse": payload})

        def proxy_rest_api(self, base, path, method, query, body):
            parts = urllib.parse.urlsplit(base)
            netloc = parts.hostname + (":%d" % parts.port if parts.port else "")
            pairs = []
            for k, v in query.items():
                for item in (v if isinstance(v, list) else [v]):
                    pairs.append((k, str(item).lower() if isinstance(item, bool) else str(item)))
            target = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/" + path.lstrip("/"),
                                              urllib.parse.urlencode(pairs), ""))
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(target, data=data, method=method)
            req.add_header("Accept", "application/json")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            bearer = parts.username is not None and parts.path.rstrip("/").endswith("/api/v2")
            if parts.username is not None and not bearer:
                cred = "%s:%s" % (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
                req.add_header("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())
            for attempt in (0, 1):
                if bearer:
                    token = self.airflow3_token(parts, netloc, fresh=attempt > 0)
                    req.remove_header("Authorization")
                    req.add_header("Authorization", "Bearer " + token)
                status, raw = self.http(req, base)
                if not (bearer and status == 401):
                    break
            try:
                payload = json.loads(raw) if raw.strip() else None
            except ValueError:
                payload = raw.decode("utf-8", "replace")
            return self.rest_result(status, payload)

        @staticmethod
        def http(req, base):
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
            except (urllib.error.URLError, OSError) as e:
                raise ApiError("InternalServerException", "Airflow REST API at %s unreachable: %s" % (base, e))

        def airflow3_token(self, parts, netloc, fresh):
            """A JWT from the Airflow 3 api-server's simple auth manager, cached per server."""
            key = (parts.scheme, netloc, parts.username)
            if fresh or key not in state.tokens:
                url = urllib.parse.urlunsplit((parts.scheme, netloc, "/auth/token", "", ""))
                login = json.dumps({"username": urllib.parse.unquote(parts.username),
                                    "password": urllib.parse.unquote(parts.password or "")}).encode()
                req = urllib.request.Request(url, data=login, method="POST")
                req.add_header("Content-Type", "application/json")
                status, raw = self.http(req, url)
                try:
                    token = json.loads(raw)["access_token"]
                except (ValueError, KeyError, TypeError):
                    raise ApiError("InternalServerException",
                                   "Airflow 3 login at %s answered HTTP %d without a token: %s"
                                   % (url, status, raw[:200].decode("utf-8", "replace")))
                state.tokens[key] = token
            return state.tokens[key]

        def airflow_cli(self, command):
            auth = self.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            with state.lock:
                entry = state.cli_tokens.get(token) if token else None
                if entry is None or entry[2] < now():
                    return self.send(403, {"message": "Forbidden"})
                rec = state.envs.get(entry[:2])
                if rec is None or rec.env["Status"] not in WEBSERVER_UP:
                    return self.send(403, {"message": "Forbidden"})
                cli = state.config["AirflowCli"]
                if not cli:
                    out, err = rec.airflow.cli(command.strip())
            if cli:
                try:
                    done = subprocess.run([cli] + shlex.split(command), capture_output=True, timeout=60)
                    out, err = done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
                except (OSError, ValueError, subprocess.TimeoutExpired) as e:
                    out, err = "", "mwaa-standin: cannot run %s: %s\n" % (cli, e)
            return self.send(200, {
                "stdout": base64.b64encode(out.encode()).decode(),
                "stderr": base64.b64encode(err.encode()).decode(),
            })

        # ---- control API

        def control(self, parts, query, body_bytes):
            try:
                text = body_bytes.decode("utf-8")
                body = json.loads(text) if text.strip() else {}
            except ValueError:
                return self.send(400, {"error": "the body is not JSON"})
            try:
                with state.lock:
                    status, out = self.control_call(parts, query, body)
                    data = json.dumps(out).encode()  # while nothing can change it
            except ControlError as err:
                return self.send(err.status, {"error": err.message})
            except (TypeError, ValueError, AttributeError) as err:
                return self.send(400, {"error": "bad request: %s" % err})
            return self.send(status, None, raw=data)

        def control_call(self, parts, query, body):
            m = self.command
            region = query.get("region")
            if parts == ["health"] and m == "GET":
                return 200, {"ok": True, "port": state.port}
            if parts == ["reset"] and m == "POST":
                state.reset()
                return 200, {"ok": True}
            if parts == ["config"]:
                if m == "POST":
                    known = {"CreateDelay", "UpdateDelay", "DeleteDelay", "CreateOutcome",
                             "CreateFailureMessage", "AirflowVersion", "AirflowApi", "AirflowCli"}
                    unknown = set(body) - known
                    if unknown:
                        raise ControlError(400, "unknown setting(s): %s" % ", ".join(sorted(unknown)))
                    if "CreateOutcome" in body and body["CreateOutcome"] not in ENVIRONMENT_STATUSES:
                        raise ControlError(400, "CreateOutcome must be an environment status")
                    for k in ("CreateDelay", "UpdateDelay", "DeleteDelay"):
                        if k in body:
                            body[k] = float(body[k])
                    state.config.update(body)
                elif m != "GET":
                    raise ControlError(405, "GET or POST")
                return 200, state.config
            if parts == ["requests"]:
                if m == "DELETE":
                    state.requests = []
                    return 200, {"ok": True}
                op = query.get("operation")
                return 200, [r for r in state.requests if op in (None, r["operation"])]
            if parts == ["faults"]:
                if m == "DELETE":
                    name = query.get("name")
                    state.faults = [f for f in state.faults if name is not None and f.get("Name") != name]
                elif m == "POST":
                    if not isinstance(body.get("Operation"), str) or not isinstance(body.get("Error"), str):
                        raise ControlError(400, "Operation and Error are required")
                    fault = {"Operation": body["Operation"], "Error": body["Error"],
                             "Message": body.get("Message"), "Count": int(body.get("Count", 1)),
                             "Name": body.get("Name"), "Status": body.get("Status"),
                             "Method": body.get("Method"), "PathPrefix": body.get("PathPrefix"),
                             "Skip": int(body.get("Skip", 0))}
                    if fault["Count"] == 0:
                        raise ControlError(400, "Count must be positive, or -1 for always")
                    state.faults.append(fault)
                return 200, state.faults
            if parts == ["next-create"]:
                if m == "DELETE":
                    state.next_create = []
                elif m == "POST":
                    unknown = set(body) - {"Delay", "Outcome", "FailureMessage", "Name"}
                    if unknown:
                        raise ControlError(400, "unknown field(s): %s" % ", ".join(sorted(unknown)))
                    if "Outcome" in body and body["Outcome"] not in ENVIRONMENT_STATUSES:
                        raise ControlError(400, "Outcome must be an environment status")
                    if "Delay" in body:
                        body["Delay"] = float(body["Delay"])
                    state.next_create.append(body)
                return 200, state.next_create
            if parts == ["environments"]:
                if m == "POST":
                    items = body if isinstance(body, list) else [body]
                    out = [state.seed(item, region) for item in items]
                    return 200, out if isinstance(body, list) else out[0]
                if m != "GET":
                    raise ControlError(405, "GET or POST")
                state.settle()
                return 200, [{"Region": r, "Environment": rec.env} for (r, n), rec in state.envs.items()
                             if region in (None, r)]
            if len(parts) >= 2 and parts[0] == "environments":
                rec = state.find(parts[1], region)
                if rec is None:
                    raise ControlError(404, "no environment %s" % parts[1])
                if len(parts) == 2:
                    if m == "PATCH":
                        if not isinstance(body, dict):
                            raise ControlError(400, "a JSON object of Environment fields")
                        if "Status" in body and body["Status"] not in ENVIRONMENT_STATUSES:
                            raise ControlError(400, "unknown Status %r" % body["Status"])
                        rec.env.update(body)
                        rec.pending = None
                    elif m == "DELETE":
                        del state.envs[(rec.region, rec.env["Name"])]
                        return 200, {"ok": True}
                    elif m != "GET":
                        raise ControlError(405, "GET, PATCH or DELETE")
                    pending = None
                    if rec.pending:
                        pending = {"At": epoch(rec.pending[0]), "Action": rec.pending[1],
                                   "Status": (rec.pending[2] or {}).get("Status")}
                    return 200, {"Region": rec.region, "Environment": rec.env, "Pending": pending}
                if parts[2:] == ["airflow"]:
                    af = rec.airflow
                    if m == "POST":
                        if body.get("ReplaceDags"):
                            af.dags = {}
                        for dag in body.get("Dags") or []:
                            af.upsert_dag(dag)
                        if "DagRunDuration" in body:
                            af.settings["DagRunDuration"] = float(body["DagRunDuration"])
                        if "DagRunOutcome" in body:
                            if body["DagRunOutcome"] not in ("success", "failed"):
                                raise ControlError(400, "DagRunOutcome: success or failed")
                            af.settings["DagRunOutcome"] = body["DagRunOutcome"]
                        if "AirflowApi" in body:
                            af.settings["AirflowApi"] = body["AirflowApi"]
                        if "ReportStore" in body:
                            af.settings["ReportStore"] = body["ReportStore"]
                        for key in ("Reports", "TaskErrors"):
                            if key in body:
                                if not isinstance(body[key], dict):
                                    raise ControlError(400, "%s: an object {dag_id: value}" % key)
                                af.settings[key].update(body[key])
                        if "Health" in body:
                            af.health = body["Health"]
                    elif m != "GET":
                        raise ControlError(405, "GET or POST")
                    return 200, af.snapshot()
            raise ControlError(404, "no control endpoint %s %s" % (m, "/".join(["/_standin"] + parts)))

    return Handler


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--create-delay", type=float, default=2.0)
    parser.add_argument("--update-delay", type=float, default=2.0)
    parser.add_argument("--delete-delay", type=float, default=2.0)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--account", default="123456789012")
    parser.add_argument("--airflow-version", default="2.10.3")
    parser.add_argument("--airflow-api")
    parser.add_argument("--airflow-cli")
    parser.add_argument("--seed")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if not re.match(r"^\d{12}$", args.account):
        parser.error("--account must be 12 digits")

    state = State(args)
    try:
        server = Server((args.host, args.port), make_handler(state, args.quiet))
    except OSError as e:
        sys.stderr.write("mwaa-standin: cannot listen on %s:%d: %s\n" % (args.host, args.port, e))
        return 1
    state.port = server.server_address[1]

    if args.seed:
        with open(args.seed, encoding="utf-8") as f:
            seeds = json.load(f)
        with state.lock:
            for item in seeds if isinstance(seeds, list) else [seeds]:
                state.seed(item)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % state.port)
        os.replace(tmp, args.port_file)
    print("http://%s:%d" % (args.host, state.port), flush=True)
    sys.stderr.write("mwaa-standin: listening on http://%s:%d (pid %d)\n" % (args.host, state.port, os.getpid()))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
