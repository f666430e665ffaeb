"""The Step Functions drill of scripts/mwaa-e2e.sh, on moto and the MWAA stand-in.

Run by the e2e with the boto3 of the test bench's moto venv (`scripts/testbench.sh
moto-python`); it does what AWS would do around the workflow `mwaa-dr deploy
--print-definition` generated, and checks the outcome:

1. the outcome topic (DR_SNS_TOPIC_ARN) and a topic for the restore's request, each read back
   through an SQS queue subscribed to it;
2. the state machine, created on moto's Step Functions from the definition, with the states
   moto cannot run swapped, each swap checked to hit the state it names (moto has no MWAA):
   - `confirm_secondary_available.status` (`aws-sdk:mwaa:getEnvironment`) becomes a Pass
     whose result is the stand-in's own GetEnvironment answer through the state's own
     ResultSelector;
   - `restore_latest_backup` (`aws-sdk:mwaa:invokeRestApi.waitForTaskToken`) becomes
     `sns:publish.waitForTaskToken` publishing exactly InvokeRestApi's parameters; the relay
     below makes that InvokeRestApi call on the stand-in unchanged, so the real restore DAG
     runs in the standby's Airflow and its task answers the token (`--task-token`);
3. the health-check schedule on moto's EventBridge Scheduler as `deploy` makes it (rate,
   window OFF, target the state machine, input `{"simulate_dr": "YES"}` as with
   MWAA_SIMULATE_DR=YES); moto does not fire schedules, so it is fired as the Scheduler does:
   GetSchedule, then StartExecution on its Target.Arn with its Target.Input;
4. the relay, until the execution ends, while `mwaa-dr failover --via-step-functions
   --execution ARN` (the command after `--`, run as given with `--execution` appended)
   follows the execution the schedule started, as an operator would;
5. the checks: before the firing, the restore DAG is unpaused in the secondary although its
   new DAGs are paused (`--paused-dag`); the follower exits 0 (the execution SUCCEEDED and
   recovered) and its JSON timeline has every Warm-Standby step `ok` and a recovery time;
   the restore DAG's run (`mwaa-dr-sfn-<execution>`) exists in the standby with state
   success (InvokeRestApi GET, as MWAA would answer); the schedule is DISABLED; the outcome
   topic received the success message naming the secondary.

Prints a JSON summary on stdout (the timeline, the run, the message); exits non-zero with
the reason on stderr when a check fails.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
from botocore.config import Config

GET_ENVIRONMENT = "arn:aws:states:::aws-sdk:mwaa:getEnvironment"
INVOKE_WAIT = "arn:aws:states:::aws-sdk:mwaa:invokeRestApi.waitForTaskToken"
PUBLISH_WAIT = "arn:aws:states:::sns:publish.waitForTaskToken"
# The Warm-Standby workflow's steps, as the follower's timeline names them.
WARM_STANDBY_STEPS = ["confirm_primary_unhealthy", "disable_health_check",
                      "confirm_secondary_available", "restore_latest_backup", "notify"]


def fail(message):
    sys.exit(f"sfn-drill: {message}")


def log(message):
    print(f"sfn-drill: {message}", file=sys.stderr, flush=True)


def select(doc, path):
    """A `$.a.b` reference of a ResultSelector, resolved in doc."""
    if not path.startswith("$."):
        fail(f"unsupported ResultSelector path {path}")
    for part in path[2:].split("."):
        if not isinstance(doc, dict) or part not in doc:
            fail(f"{path} is not in {doc}")
        doc = doc[part]
    return doc


def swap(states, name, resource, replacement):
    original = states.get(name)
    if original is None or original.get("Resource") != resource:
        fail(f"{name} is not the {resource} state moto cannot run: {original}")
    for key in ("Next", "ResultPath"):
        if key in original and key not in replacement:
            replacement[key] = original[key]
    states[name] = replacement
    return original


def main():
    p = argparse.ArgumentParser()
    for flag in ("moto", "standin", "region", "definition", "secondary", "topic-arn",
                 "schedule", "machine-name", "interval-mins", "timeout-secs", "paused-dag"):
        p.add_argument("--" + flag, required=True)
    p.add_argument("follow", nargs=argparse.REMAINDER,
                   help="-- the mwaa-dr command that follows the execution (--execution ARN "
                        "is appended)")
    a = p.parse_args()
    follow = a.follow[1:] if a.follow[:1] == ["--"] else a.follow
    if not follow:
        fail("no follower: pass -- MWAA-DR... failover --via-step-functions")
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
             "region_name": a.region}

    def moto(service):
        return boto3.client(service, endpoint_url=a.moto, **creds)

    sns, sqs, sfn, scheduler = moto("sns"), moto("sqs"), moto("stepfunctions"), moto("scheduler")
    # The stand-in serves MWAA at its own address, without MWAA's host prefixes.
    mwaa = boto3.client("mwaa", endpoint_url=a.standin, config=Config(inject_host_prefix=False),
                        **creds)

    def topic_with_queue(name):
        topic = sns.create_topic(Name=name)["TopicArn"]
        queue = sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        return topic, queue

    def received(queue):
        out = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in out.get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            envelope = json.loads(m["Body"])
            yield envelope.get("Subject", ""), envelope["Message"]

    outcome_topic, outcome_queue = topic_with_queue(a.topic_arn.rsplit(":", 1)[-1])
    if outcome_topic != a.topic_arn:
        fail(f"moto named the topic {outcome_topic}, the definition publishes to {a.topic_arn}")
    request_topic, request_queue = topic_with_queue(f"{a.machine_name}-restore-request")

    with open(a.definition) as f:
        definition = json.load(f)
    states = definition["States"]
    status = states["confirm_secondary_available.status"]
    answer = mwaa.get_environment(Name=a.secondary)
    answer.pop("ResponseMetadata", None)
    result = {k[:-2]: select(answer, v) for k, v in status["ResultSelector"].items()}
    swap(states, "confirm_secondary_available.status", GET_ENVIRONMENT,
         {"Type": "Pass", "Comment": "GetEnvironment answered by the MWAA stand-in",
          "Result": result})
    restore = dict(states["restore_latest_backup"])
    rest_call = restore["Parameters"]
    restore["Resource"] = PUBLISH_WAIT
    restore["Parameters"] = {"TopicArn": request_topic, "Message": rest_call}
    swap(states, "restore_latest_backup", INVOKE_WAIT, restore)
    machine = sfn.create_state_machine(
        name=a.machine_name, definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/mwaa-dr-drill-workflow")["stateMachineArn"]
    log(f"state machine {machine}; swapped: confirm_secondary_available.status "
        f"(GetEnvironment {result}), restore_latest_backup (InvokeRestApi relayed)")

    # Nothing unpauses the restore DAG before the workflow triggers it: rendered unpaused at
    # creation, it is unpaused in a secondary whose new DAGs are paused (--paused-dag shows).
    restore_dag = rest_call["Path"].rsplit("/dagRuns", 1)[0]
    for path, paused in ((restore_dag, False), (f"/dags/{a.paused_dag}", True)):
        dag = mwaa.invoke_rest_api(Name=a.secondary, Method="GET", Path=path)["RestApiResponse"]
        if dag.get("is_paused") is not paused:
            fail(f"{path} in {a.secondary}: is_paused is {dag.get('is_paused')}, not {paused}")
    log(f"{restore_dag} is unpaused in {a.secondary}, where {a.paused_dag} was paused at creation")

    scheduler.create_schedule(
        Name=a.schedule, ScheduleExpression=f"rate({a.interval_mins} minutes)",
        FlexibleTimeWindow={"Mode": "OFF"}, State="ENABLED",
        Target={"Arn": machine, "RoleArn": "arn:aws:iam::123456789012:role/mwaa-dr-drill-scheduler",
                "Input": json.dumps({"simulate_dr": "YES"})})
    # The Scheduler's firing: its target, started with its input.
    schedule = scheduler.get_schedule(Name=a.schedule)
    if schedule["State"] != "ENABLED":
        fail(f"the schedule is {schedule['State']} before the drill")
    target = schedule["Target"]
    # The Scheduler names each execution; moto, asked without a name, uses "None".
    execution = sfn.start_execution(stateMachineArn=target["Arn"], input=target["Input"],
                                    name=str(uuid.uuid4()))["executionArn"]
    log(f"the schedule fired {execution} with {target['Input']}")
    # An operator follows the execution the schedule started, with the binary.
    follower_out, follower_err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    follower = subprocess.Popen(follow + ["--execution", execution], stdout=follower_out,
                                stderr=follower_err, stdin=subprocess.DEVNULL, text=True)

    deadline = time.monotonic() + float(a.timeout_secs)
    relayed = []
    while True:
        for _, message in received(request_queue):
            call = json.loads(message)
            if call.get("Name") != a.secondary or not call.get("Path", "").endswith("/dagRuns"):
                fail(f"the restore's request is not a DAG run in {a.secondary}: {call}")
            reply = mwaa.invoke_rest_api(**call)
            relayed.append({"request": call["Path"], "dag_run_id": call["Body"]["dag_run_id"],
                            "status": reply["RestApiStatusCode"]})
            log(f"InvokeRestApi {call['Method']} {call['Path']}: HTTP {reply['RestApiStatusCode']}")
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        if time.monotonic() > deadline:
            follower.kill()
            fail(f"the execution still runs after {a.timeout_secs} s")
    try:
        code = follower.wait(timeout=120)
    except subprocess.TimeoutExpired:
        follower.kill()
        fail(f"the follower did not end 120 s after the execution ended {described['status']}")
    follower_out.seek(0)
    follower_err.seek(0)
    printed, progress = follower_out.read(), follower_err.read()
    log("the follower's progress:\n" + progress.rstrip())
    if code != 0:
        fail(f"the follower exited {code} (execution {described['status']}: "
             f"{described.get('error')} {described.get('cause')}):\n{printed}")
    try:
        timeline = json.loads(printed)
    except ValueError as e:
        fail(f"the follower printed no JSON timeline ({e}): {printed}")
    steps = [(s["step"], s["outcome"]) for s in timeline.get("steps", [])]
    if steps != [(s, "ok") for s in WARM_STANDBY_STEPS]:
        fail(f"the timeline's steps are {steps}, not {WARM_STANDBY_STEPS} all ok: {timeline}")
    if timeline.get("run_id") != execution.rsplit(":", 1)[-1] or timeline.get(
            "recovery_seconds") is None or timeline.get("finished_at") is None:
        fail(f"the timeline does not name {execution} as recovered: {timeline}")
    if described["status"] != "SUCCEEDED":
        fail(f"the follower exited 0 for an execution that ended {described['status']}")
    if len(relayed) != 1 or relayed[0]["status"] != 200:
        fail(f"one restore run expected, relayed: {relayed}")

    # The restore DAG's run, as the secondary's REST API shows it once its task has ended.
    run_id = relayed[0]["dag_run_id"]
    dag_path = rest_call["Path"]
    run = None
    while time.monotonic() < deadline:
        runs = mwaa.invoke_rest_api(Name=a.secondary, Method="GET", Path=dag_path,
                                    QueryParameters={"limit": 100})["RestApiResponse"]
        run = next((r for r in runs.get("dag_runs", []) if r.get("dag_run_id") == run_id), None)
        if run is not None and run.get("state") in ("success", "failed"):
            break
        time.sleep(2)
    if run is None or run.get("state") != "success":
        fail(f"the restore DAG's run {run_id} in {a.secondary}: {run}")

    state = scheduler.get_schedule(Name=a.schedule)["State"]
    if state != "DISABLED":
        fail(f"the workflow left the schedule {state}")
    messages = []
    for _ in range(10):
        messages += list(received(outcome_queue))
        if messages:
            break
    if not any("succeeded" in s and a.secondary in m for s, m in messages):
        fail(f"no success message on {outcome_topic}: {messages}")
    path = " > ".join(s for s, _ in steps)
    summary = (f"execution {described['status']} through {path} (followed by mwaa-dr, "
               f"recovery {timeline['recovery_seconds']:.1f} s); restore run {run_id} "
               f"{run['state']} in {a.secondary}; schedule {state}; SNS: {messages[0][0]}")
    print(json.dumps({"summary": summary, "execution": execution, "status": described["status"],
                      "timeline": timeline, "restore_run": {"dag_run_id": run_id,
                                                            "state": run["state"]},
                      "schedule": state, "notification": messages[0]}, indent=1))


if __name__ == "__main__":
    main()
