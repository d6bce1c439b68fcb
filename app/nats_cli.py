"""`tally nats up` (a local three-node JetStream cluster, in the foreground until Ctrl-C) and
`tally consume` (count the event log into PostgreSQL): the scaled-out ingestion of
docs/scaling.md, tried on one machine."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import JsonOption, bind_refusal, err, fail, load_settings, prepared_database, print_json
from app.nats_cluster import NODES, local_cluster, wait_until_ready

nats_cli = typer.Typer(help="A local NATS JetStream cluster for the scaled-out ingestion.", no_args_is_help=True)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command as Ctrl-C does: through ``finally``, which stops what it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


@nats_cli.command("up")
def nats_up(
    port: Annotated[
        int, typer.Option(help=f"The first node's client port; the others take the next {NODES - 1}.")
    ] = 4222,
    cluster_port: Annotated[
        int,
        typer.Option(help=f"The first node's route port (between nodes); the others take the next {NODES - 1}."),
    ] = 6222,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the nodes keep the stream (default: nats/ under TALLY_DATA_DIR)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a three-node JetStream cluster on loopback from the installed nats-server, create the
    stream (TALLY_NATS_STREAM, TALLY_NATS_PARTITIONS subjects, TALLY_NATS_REPLICAS copies), print
    the TALLY_NATS_URL to give `tally serve` and `tally consume`, and run in the foreground until
    Ctrl-C (or SIGTERM), which stops the nodes. The stream's data stays under --data-dir, so
    messages not yet consumed are there at the next `tally nats up`."""
    from app.usage_ingest import log_config

    settings = load_settings()
    client_ports = [port + n for n in range(NODES)]
    cluster_ports = [cluster_port + n for n in range(NODES)]
    for taken in client_ports + cluster_ports:
        refused = bind_refusal("127.0.0.1", taken)
        if refused is not None:
            reason = "is in use (another `tally nats up`?)" if refused.errno == errno.EADDRINUSE else refused.strerror
            fail(f"port {taken} on 127.0.0.1 {reason}: choose others with --port and --cluster-port")
    cluster = local_cluster(
        data_dir or settings.data_dir / "nats", client_ports=client_ports, cluster_ports=cluster_ports
    )
    config = log_config(settings.model_copy(update={"nats_url": cluster.url}))
    if config.replicas > NODES:
        fail(f"TALLY_NATS_REPLICAS is {config.replicas}: a local cluster has {NODES} nodes")
    _stop_on_sigterm()
    cluster.start_all()
    try:
        try:
            asyncio.run(wait_until_ready(config))
        except Exception:
            stopped = f" ({', '.join(cluster.exited())} exited)" if cluster.exited() else ""
            logs = ", ".join(str(node.log_file) for node in cluster.nodes)
            fail(f"the cluster did not become ready{stopped}; see the logs: {logs}")
        document = {
            "natsUrl": cluster.url,
            "stream": config.stream,
            "partitions": config.partitions,
            "replicas": config.replicas,
            "dataDir": str(cluster.nodes[0].store_dir.parent),
        }
        if as_json:
            print_json(document)
        else:
            err.print(
                f"JetStream cluster of {NODES} nodes up, stream {config.stream} ({config.partitions} partitions, "
                f"{config.replicas} replicas), data in {document['dataDir']}\n"
                f"  export TALLY_NATS_URL={cluster.url}\n"
                "  then `tally serve` (edge and consumer) or `tally serve --no-jobs` (edge) and `tally consume`\n"
                "Ctrl-C stops the cluster.",
                highlight=False,
            )
        sys.stdout.flush()
        while not cluster.exited():
            time.sleep(1)
        fail(f"node {', '.join(cluster.exited())} stopped; see its log under {document['dataDir']}")
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


def consume(
    batch: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="Messages taken and counted in one transaction (TALLY_NATS_CONSUME_BATCH)."),
    ] = None,
) -> None:
    """Count the event log into PostgreSQL until Ctrl-C (or SIGTERM): batches of messages from
    the stream's shared durable consumer, one transaction each, acknowledged after the commit.
    Run as many as you like, on as many machines: they share the work, and a batch delivered
    again (a consumer died mid-batch) counts nothing twice. Needs TALLY_NATS_URL."""
    from app.database import create_engine, session_factory
    from app.log_consumption import consume_log

    settings = load_settings()
    if not settings.nats_servers:
        fail("TALLY_NATS_URL is not set: give the NATS servers, e.g. the URL `tally nats up` prints")
    if batch is not None:
        settings = settings.model_copy(update={"nats_consume_batch": batch})
    url = prepared_database(settings)
    _stop_on_sigterm()

    async def main() -> None:
        engine = create_engine(url, connect_timeout_seconds=settings.database_connect_timeout_seconds)
        try:
            await consume_log(session_factory(engine), settings)
        finally:
            await engine.dispose()

    err.print(f"consuming stream {settings.nats_stream} from {settings.nats_url}; Ctrl-C stops", highlight=False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
