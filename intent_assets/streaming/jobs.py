"""`start_streaming_job`: (re)start the session streaming job, locally or on EMR through Pipes."""

from dagster import Config, OpExecutionContext, in_process_executor, job, op

from intent_resources.streaming import StreamingJobResource, restart
from intent_resources.streaming_emr import emr_job_flow_params, pipes_emr_client, run_as_emr_step


class StartStreamConfig(Config):
    reason: str = "manual start"


@op
def start_stream(context: OpExecutionContext, config: StartStreamConfig,
                 streaming: StreamingJobResource) -> None:
    """Start the job (stopping a hung one first): a local process, or through Pipes spark-submit
    to a standalone cluster or a step on EMR."""
    context.log.info(f"starting the streaming job: {config.reason}")
    if streaming.mode == "standalone":
        # Pipes waits for the job: this run lasts as long as the job does
        streaming.run_on_cluster(context)
        return
    if streaming.mode == "local":
        stream = streaming.local_stream()
        pid = restart(stream)
        context.log.info(f"streaming job started, pid {pid}, log {stream.log_file}")
        return
    # Pipes waits for the step: this run lasts as long as the job does, and ends when it dies.
    if streaming.emr_cluster_id:  # a step on the deployment's cluster
        run_as_emr_step(streaming, context)
        return
    client = pipes_emr_client(streaming)
    client.run(context=context, run_job_flow_params=emr_job_flow_params(streaming))


# one op: a step subprocess would only add the code location's load time to each restart
@job(tags={"domain": "streaming"}, executor_def=in_process_executor)
def start_streaming_job():
    """Start (or restart) the live session job; the supervisor sensor requests it on failure."""
    start_stream()
